"""Protocols are sans-IO: bytes and a connection object in, ints, values and bytes out.

No sockets here; ``FakeConnection`` carries the only attribute the built-in
protocols read from a connection (``max_package_size``).
"""
import sys
import textwrap

import pytest

from geventman import protocols
from geventman.protocols import ProtocolNotFound, adapt, register, resolve, split_address
from geventman.protocols.frame import Frame
from geventman.protocols.text import Text


class FakeConnection:
    def __init__(self, max_package_size=10 << 20):
        self.max_package_size = max_package_size


@pytest.fixture
def connection():
    return FakeConnection()


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """``register`` and app protocols are process-wide: give every test a fresh view."""
    monkeypatch.setattr(protocols, "_registered", {})
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("geventman_app."):
            del sys.modules[name]


# -- text:// -------------------------------------------------------------------

class TestText:
    def test_input_without_newline_needs_more(self, connection):
        assert Text.input(b"", connection) == 0
        assert Text.input(b"tom", connection) == 0
        assert Text.input(b"tom\r", connection) == 0

    def test_input_returns_length_through_the_newline(self, connection):
        assert Text.input(b"tom\n", connection) == 4
        assert Text.input(b"tom\r\n", connection) == 5
        assert Text.input(b"\n", connection) == 1

    def test_input_counts_only_the_first_line(self, connection):
        assert Text.input(b"a\nbb\nccc\n", connection) == 2
        assert Text.input(b"tom\njer", connection) == 4

    def test_input_without_newline_at_max_package_size_is_bad(self):
        small = FakeConnection(max_package_size=8)
        assert Text.input(b"x" * 7, small) == 0
        assert Text.input(b"x" * 8, small) == -1
        assert Text.input(b"x" * 100, small) == -1

    def test_input_reads_max_package_size_per_connection(self):
        assert Text.input(b"x" * 8, FakeConnection(max_package_size=9)) == 0
        assert Text.input(b"x" * 8, FakeConnection(max_package_size=8)) == -1

    def test_decode_strips_line_end_and_gives_str(self, connection):
        assert Text.decode(b"tom\n", connection) == "tom"
        assert Text.decode(b"tom\r\n", connection) == "tom"
        assert Text.decode(b"\n", connection) == ""
        assert isinstance(Text.decode(b"tom\n", connection), str)

    def test_decode_keeps_inner_whitespace(self, connection):
        assert Text.decode(b"  a b \n", connection) == "  a b "

    def test_decode_is_utf8_and_replaces_bad_bytes(self, connection):
        assert Text.decode("héllo 世界\n".encode(), connection) == "héllo 世界"
        assert Text.decode(b"a\xffb\n", connection) == "a\ufffdb"

    def test_encode_appends_newline(self, connection):
        assert Text.encode("hello tom", connection) == b"hello tom\n"
        assert Text.encode(b"hello tom", connection) == b"hello tom\n"
        assert Text.encode("", connection) == b"\n"

    def test_encode_str_is_utf8(self, connection):
        assert Text.encode("世界", connection) == "世界\n".encode("utf-8")

    def test_round_trip(self, connection):
        wire = Text.encode("hello tom", connection)
        assert Text.input(wire, connection) == len(wire)
        assert Text.decode(wire, connection) == "hello tom"


# -- frame:// ------------------------------------------------------------------

class TestFrame:
    def test_input_needs_the_four_header_bytes(self, connection):
        for partial in (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00"):
            assert Frame.input(partial, connection) == 0

    def test_input_is_the_header_value_which_counts_the_header(self, connection):
        assert Frame.input(b"\x00\x00\x00\x09jhdxr", connection) == 9
        # The length is known from the header alone, before the payload arrived.
        assert Frame.input(b"\x00\x00\x00\x09", connection) == 9
        assert Frame.input(b"\x00\x00\x01\x00", connection) == 256
        assert Frame.input(b"\x00\x00\x00\x04", connection) == 4

    def test_input_header_is_big_endian_unsigned(self, connection):
        assert Frame.input(b"\x01\x00\x00\x00", connection) == 1 << 24
        assert Frame.input(b"\xff\xff\xff\xff", connection) == 0xFFFFFFFF

    @pytest.mark.parametrize("header", [0, 1, 2, 3])
    def test_input_header_below_four_is_bad(self, connection, header):
        assert Frame.input(header.to_bytes(4, "big") + b"payload", connection) == -1

    def test_decode_drops_the_header(self, connection):
        assert Frame.decode(b"\x00\x00\x00\x09jhdxr", connection) == b"jhdxr"
        assert Frame.decode(b"\x00\x00\x00\x04", connection) == b""

    def test_encode_prefixes_length_including_header(self, connection):
        assert Frame.encode(b"jhdxr", connection) == b"\x00\x00\x00\x09jhdxr"
        assert Frame.encode("jhdxr", connection) == b"\x00\x00\x00\x09jhdxr"
        assert Frame.encode(b"", connection) == b"\x00\x00\x00\x04"
        assert Frame.encode(b"x" * 300, connection)[:4] == b"\x00\x00\x01\x30"

    def test_round_trip(self, connection):
        wire = Frame.encode("世界", connection)
        assert Frame.input(wire, connection) == len(wire)
        assert Frame.decode(wire, connection) == "世界".encode()


# -- addresses -----------------------------------------------------------------

class TestSplitAddress:
    @pytest.mark.parametrize("address, expected", [
        ("text://0.0.0.0:1234", ("text", "0.0.0.0", 1234)),
        ("tcp://127.0.0.1:2347", ("tcp", "127.0.0.1", 2347)),
        ("JsonNL://0.0.0.0:1234", ("JsonNL", "0.0.0.0", 1234)),
        ("websocket://0.0.0.0:8484/chat", ("websocket", "0.0.0.0", 8484)),
        ("udp://[::1]:55656", ("udp", "::1", 55656)),
        ("frame://localhost:0", ("frame", "localhost", 0)),
    ])
    def test_splits(self, address, expected):
        assert split_address(address) == expected

    @pytest.mark.parametrize("address", [
        "0.0.0.0:1234",           # no scheme
        "text://0.0.0.0",         # no port
        "text://:1234",           # no host
        "text://0.0.0.0:http",    # port not a number
        "text://0.0.0.0:",
    ])
    def test_rejects(self, address):
        with pytest.raises(ValueError):
            split_address(address)


# -- scheme lookup ---------------------------------------------------------------

def write_app_protocol(app_dir, name, source):
    folder = app_dir / "protocols"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (name + ".py")).write_text(textwrap.dedent(source))


JSONNL = """
    import json

    class JsonNL:
        @staticmethod
        def input(buffer):
            pos = buffer.find(b"\\n")
            if pos < 0:
                return 0
            return pos + 1

        @staticmethod
        def encode(buffer):
            return json.dumps(buffer) + "\\n"

        @staticmethod
        def decode(buffer):
            return json.loads(buffer.strip())
"""


class TestResolve:
    @pytest.mark.parametrize("scheme", ["tcp", "udp", "ssl", "TCP", "Udp", "SSL"])
    def test_transports_have_no_protocol(self, scheme):
        assert resolve(scheme) is None

    @pytest.mark.parametrize("scheme", ["text", "TEXT", "Text", "telnet", "Telnet"])
    def test_text_and_telnet(self, scheme):
        # The very class, not a wrapper: the connection has a fast path for it.
        assert resolve(scheme) is Text

    @pytest.mark.parametrize("scheme", ["frame", "FRAME", "Frame"])
    def test_frame(self, scheme):
        assert resolve(scheme) is Frame

    def test_unknown_scheme(self, tmp_path):
        with pytest.raises(ProtocolNotFound):
            resolve("nosuchproto")
        with pytest.raises(ProtocolNotFound):
            resolve("nosuchproto", app_dir=str(tmp_path))
        assert issubclass(ProtocolNotFound, LookupError)

    def test_application_protocol(self, tmp_path, connection):
        app_dir = tmp_path / "myapp"
        write_app_protocol(app_dir, "jsonnl", JSONNL)
        protocol = resolve("JsonNL", app_dir=str(app_dir))
        assert protocol.__name__ == "JsonNL"
        wire = b'{"type":"message","content":"hello"}\n'
        assert protocol.input(wire + b'{"ty', connection) == len(wire)
        assert protocol.decode(wire, connection) == {"type": "message", "content": "hello"}
        assert protocol.encode({"a": 1}, connection) == '{"a": 1}\n'

    def test_application_protocol_is_case_insensitive(self, tmp_path):
        app_dir = tmp_path / "myapp"
        write_app_protocol(app_dir, "jsonnl", JSONNL)
        for scheme in ("jsonnl", "JSONNL", "JsonNL"):
            assert resolve(scheme, app_dir=str(app_dir)).__name__ == "JsonNL"

    def test_application_protocol_is_not_seen_from_another_application(self, tmp_path):
        write_app_protocol(tmp_path / "myapp", "jsonnl", JSONNL)
        (tmp_path / "other").mkdir()
        with pytest.raises(ProtocolNotFound):
            resolve("JsonNL", app_dir=str(tmp_path / "other"))

    def test_application_protocol_comes_before_builtins(self, tmp_path):
        app_dir = tmp_path / "myapp"
        write_app_protocol(app_dir, "frame", """
            class Frame:
                mine = True
                @staticmethod
                def input(buffer, connection): return len(buffer)
                @staticmethod
                def decode(buffer, connection): return buffer
                @staticmethod
                def encode(data, connection): return data
        """)
        assert resolve("frame", app_dir=str(app_dir)).mine is True
        assert resolve("frame") is Frame

    def test_registered_protocol(self, connection):
        class Upper:
            @staticmethod
            def input(buffer, connection):
                return len(buffer)

            @staticmethod
            def decode(buffer, connection):
                return buffer.upper()

            @staticmethod
            def encode(data, connection):
                return data

        register("Upper", Upper)
        assert resolve("upper") is Upper
        assert resolve("UPPER") is Upper

    def test_registered_comes_before_application_and_builtins(self, tmp_path):
        app_dir = tmp_path / "myapp"
        write_app_protocol(app_dir, "jsonnl", JSONNL)

        class Mine:
            input = decode = encode = staticmethod(lambda data, connection: data)

        register("jsonnl", Mine)
        register("TEXT", Mine)
        assert resolve("JsonNL", app_dir=str(app_dir)) is Mine
        assert resolve("text") is Mine

    def test_registered_one_argument_protocol_is_adapted(self, connection):
        class Lines:
            @staticmethod
            def input(buffer):
                return buffer.find(b"\n") + 1

            @staticmethod
            def decode(buffer):
                return buffer[:-1]

            @staticmethod
            def encode(data):
                return data + b"\n"

        register("lines", Lines)
        protocol = resolve("lines")
        assert protocol.input(b"ab\ncd", connection) == 3
        assert protocol.decode(b"ab\n", connection) == b"ab"
        assert protocol.encode(b"ab", connection) == b"ab\n"


# -- adapt ---------------------------------------------------------------------

class TestAdapt:
    def test_one_argument_methods_get_buffer_and_connection(self, connection):
        namespace = {}
        exec(textwrap.dedent(JSONNL), namespace)
        manual = namespace["JsonNL"]
        protocol = adapt(manual)
        assert protocol.__name__ == "JsonNL"
        assert protocol.input(b"{}\n{}", connection) == 3
        assert protocol.input(b"{}", connection) == 0
        assert protocol.decode(b'{"content": "hello"}\n', connection) == {"content": "hello"}
        assert protocol.encode([1, 2], connection) == "[1, 2]\n"

    def test_two_argument_protocol_is_returned_unchanged(self):
        assert adapt(Text) is Text
        assert adapt(Frame) is Frame

    def test_classmethods_with_one_argument(self, connection):
        class Counted:
            prefix = b"> "

            @classmethod
            def input(cls, buffer):
                return len(buffer)

            @classmethod
            def decode(cls, buffer):
                return cls.prefix + buffer

            @classmethod
            def encode(cls, data):
                return cls.prefix + data

        protocol = adapt(Counted)
        assert protocol.input(b"abc", connection) == 3
        assert protocol.decode(b"abc", connection) == b"> abc"
        assert protocol.encode(b"abc", connection) == b"> abc"

    def test_mixed_arities(self, connection):
        class Mixed:
            @staticmethod
            def input(buffer):
                return len(buffer)

            @staticmethod
            def decode(buffer, connection):
                return (buffer, connection.max_package_size)

            @staticmethod
            def encode(data, connection=None):
                return data

        protocol = adapt(Mixed)
        assert protocol.input(b"abcd", connection) == 4
        assert protocol.decode(b"ab", FakeConnection(7)) == (b"ab", 7)
        assert protocol.encode(b"ab", connection) == b"ab"

    def test_adapted_protocol_does_not_change_the_original(self, connection):
        class One:
            input = staticmethod(lambda buffer: 1)
            decode = staticmethod(lambda buffer: buffer)
            encode = staticmethod(lambda data: data)

        adapt(One)
        assert One.input(b"x") == 1
        with pytest.raises(TypeError):
            One.input(b"x", connection)

    @pytest.mark.parametrize("missing", ["input", "decode", "encode"])
    def test_missing_method(self, missing):
        methods = {name: staticmethod(lambda data, connection: data)
                   for name in ("input", "decode", "encode") if name != missing}
        with pytest.raises(TypeError, match=missing):
            adapt(type("Broken", (), methods))
