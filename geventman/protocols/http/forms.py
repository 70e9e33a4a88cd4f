"""Request bodies and query strings: urlencoded, JSON, multipart/form-data, cookies.

Decoded values are ``str`` (UTF-8, undecodable bytes replaced). As in PHP, a name
seen twice keeps its last value, except names ending in ``[]``, which collect a list
under the name without the brackets (``a[]=1&a[]=2`` gives ``{"a": ["1", "2"]}``).
Uploaded files are dicts with the keys Workerman 3.x gives them (``name``,
``file_name``, ``file_type``, ``file_size``, ``file_data``); a file of
``spool_size`` bytes or more is also written to a temporary file named in
``tmp_name``, deleted when the next request on the connection starts or the
connection closes (move it away to keep it).
"""
import json
import os
import re
import tempfile
from urllib.parse import parse_qsl, unquote

MAX_PARTS = 1024               # multipart parts per request (Workerman: maxFileUploads)
spool_size = 1 << 20           # files this large also get a tmp_name
upload_dir = None              # where they go (None: the system temp dir)

_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def query(text):
    """``a=1&b=2`` -> ``{"a": "1", "b": "2"}`` with the PHP rules above."""
    if not text:
        return {}
    return _collect(parse_qsl(text, keep_blank_values=True, errors="replace"))


def _collect(pairs):
    result = {}
    for name, value in pairs:
        if name.endswith("[]") and len(name) > 2:
            result.setdefault(name[:-2], [])
            if isinstance(result[name[:-2]], list):
                result[name[:-2]].append(value)
            else:
                result[name[:-2]] = [value]
        else:
            result[name] = value
    return result


def cookies(header):
    """``a=1; b=x%20y`` -> ``{"a": "1", "b": "x y"}`` (values percent-decoded, as PHP)."""
    result = {}
    for item in header.split(";"):
        name, sep, value = item.strip().partition("=")
        if sep and name:
            value = value.strip()
            if len(value) > 1 and value[0] == value[-1] == '"':
                value = value[1:-1]
            result.setdefault(name, unquote(value, errors="replace"))
    return result


def content_type(value):
    """``'multipart/form-data; boundary=x'`` -> ``('multipart/form-data', {'boundary': 'x'})``."""
    kind, _, rest = value.partition(";")
    params = {}
    for name, raw in _PARAM.findall(";" + rest):
        raw = raw.strip()
        if raw[:1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name.lower()] = raw
    return kind.strip().lower(), params


def parse_body(body, header_value):
    """(post, files) for a body of Content-Type ``header_value``."""
    if not body or not header_value:
        return {}, Files()
    kind, params = content_type(header_value)
    if kind == "application/x-www-form-urlencoded":
        return query(body.decode("utf-8", "replace")), Files()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            return json.loads(body), Files()
        except ValueError:
            return {}, Files()
    if kind == "multipart/form-data" and params.get("boundary"):
        return multipart(body, params["boundary"].encode("latin-1"))
    return {}, Files()


class Files(list):
    """Uploaded files in the order they came; ``files["field"]`` finds one by field name."""

    def __getitem__(self, key):
        if isinstance(key, str):
            for item in self:
                if item["name"] == key:
                    return item
            raise KeyError(key)
        return list.__getitem__(self, key)

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, key):
        if isinstance(key, str):
            return any(item["name"] == key for item in self)
        return list.__contains__(self, key)

    def cleanup(self):
        for item in self:
            path = item.get("tmp_name")
            if path:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def multipart(body, boundary):
    """Fields and files of a multipart/form-data body (RFC 7578). Malformed parts are skipped."""
    fields, files = [], Files()
    delimiter = b"\r\n--" + boundary
    data = b"\r\n" + body
    position = data.find(delimiter)
    count = 0
    while position >= 0 and count < MAX_PARTS:
        position += len(delimiter)
        if data[position:position + 2] == b"--":
            break
        line_end = data.find(b"\r\n", position)
        following = data.find(delimiter, line_end) if line_end >= 0 else -1
        if following < 0:
            break
        _part(data[line_end + 2:following], fields, files)
        position = following
        count += 1
    return _collect(fields), files


def _part(part, fields, files):
    head, sep, content = part.partition(b"\r\n\r\n")
    if not sep:
        return
    headers = {}
    for line in head.split(b"\r\n"):
        name, _, value = line.decode("utf-8", "replace").partition(":")
        headers[name.strip().lower()] = value.strip()
    kind, params = content_type(headers.get("content-disposition", ""))
    name = params.get("name")
    if kind != "form-data" or name is None:
        return
    file_name = params.get("filename")
    if "filename*" in params:
        file_name = _extended(params["filename*"]) or file_name
    if file_name is None:
        fields.append((name, content.decode("utf-8", "replace")))
        return
    files.append(_file(name, file_name, headers.get("content-type", ""), content))


def _extended(value):
    """RFC 5987 ``UTF-8''na%C3%AFve.txt`` -> ``'naïve.txt'``."""
    charset, _, rest = value.partition("'")
    _, _, encoded = rest.partition("'")
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="strict")
    except (LookupError, UnicodeDecodeError):
        return None


def _file(name, file_name, file_type, content):
    item = {"name": name,
            "file_name": os.path.basename(file_name.replace("\\", "/")),
            "file_type": file_type or "application/octet-stream",
            "file_size": len(content), "file_data": content}
    if len(content) >= spool_size:
        handle, path = tempfile.mkstemp(prefix="geventman-upload-", dir=upload_dir)
        with os.fdopen(handle, "wb") as spooled:
            spooled.write(content)
        item["tmp_name"] = path
    return item
