"""frame://: a 4-byte big-endian length header, then the payload.

The length counts the header itself, as in Workerman: ``encode(b"jhdxr")`` is
``00 00 00 09 6a 68 64 78 72``. A header below 4 cannot frame anything and is bad input.
"""
import struct

_header = struct.Struct(">I")


class Frame:
    @staticmethod
    def input(buffer, connection):
        if len(buffer) < 4:
            return 0
        length = _header.unpack_from(buffer)[0]
        return length if length >= 4 else -1

    @staticmethod
    def decode(package, connection):
        return package[4:]

    @staticmethod
    def encode(data, connection):
        if isinstance(data, str):
            data = data.encode()
        return _header.pack(len(data) + 4) + data
