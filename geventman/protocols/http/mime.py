"""MIME types by file extension: the stdlib's built-in table plus modern web types.

The table does not read /etc/mime.types, so every machine answers the same.
Text types carry ``charset=utf-8``.
"""
import mimetypes

_table = mimetypes.MimeTypes(filenames=())
for _type, _extension in (
        ("text/javascript", ".js"), ("text/javascript", ".mjs"),
        ("application/json", ".json"), ("application/json", ".map"),
        ("application/wasm", ".wasm"), ("image/svg+xml", ".svg"),
        ("image/webp", ".webp"), ("image/avif", ".avif"), ("image/x-icon", ".ico"),
        ("font/woff", ".woff"), ("font/woff2", ".woff2"), ("font/ttf", ".ttf"),
        ("font/otf", ".otf"), ("text/markdown", ".md"), ("application/manifest+json",
                                                       ".webmanifest"),
        ("text/plain", ".log"), ("audio/mp4", ".m4a"), ("video/webm", ".webm"),
        ("audio/ogg", ".ogg"), ("audio/ogg", ".oga"), ("video/ogg", ".ogv")):
    _table.add_type(_type, _extension)

DEFAULT = "application/octet-stream"
_TEXTUAL = ("text/", "application/json", "application/javascript", "image/svg+xml",
            "application/xml", "application/manifest+json")


def type_of(path):
    """``'a/b.css'`` -> ``'text/css;charset=utf-8'``; unknown -> application/octet-stream."""
    kind, encoding = _table.guess_type(path, strict=False)
    if kind is None or encoding is not None:   # .gz, .bz2: the bytes as they are
        return DEFAULT if encoding is None else _encoded(encoding)
    if kind.startswith(_TEXTUAL):
        return kind + ";charset=utf-8"
    return kind


def _encoded(encoding):
    return {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
            "xz": "application/x-xz", "br": "application/x-brotli"}.get(encoding, DEFAULT)
