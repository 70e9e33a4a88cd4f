"""text:// (also telnet://): one package per line.

A package ends at the first ``\\n``; ``decode`` strips the trailing ``\\r\\n`` and gives
``str`` (UTF-8, undecodable bytes replaced); ``encode`` appends ``\\n``. A line longer
than the connection's ``max_package_size`` is bad input.
"""


class Text:
    @staticmethod
    def input(buffer, connection):
        position = buffer.find(b"\n")
        if position < 0:
            return -1 if len(buffer) >= connection.max_package_size else 0
        return position + 1

    @staticmethod
    def decode(package, connection):
        return package.rstrip(b"\r\n").decode("utf-8", "replace")

    @staticmethod
    def encode(data, connection):
        if isinstance(data, str):
            data = data.encode()
        return data + b"\n"
