"""TLS for connections, sans-IO: an ``ssl.SSLObject`` over two memory BIOs.

The connection keeps reading and writing raw bytes on its socket; this object turns
received ciphertext into plaintext and plaintext into ciphertext, so the read loop,
the send buffer and back-pressure stay the same with and without TLS.
``server_context(options)`` and ``client_context(options)`` build SSLContexts from
Workerman-style options (``local_cert``, ``local_pk``; ``verify_peer``, ``cafile``).
"""
import functools
import ssl


class TlsError(Exception):
    pass


def server_context(options):
    if not options.get("local_cert"):
        raise ValueError("transport 'ssl' needs context={'ssl': {'local_cert': ..., "
                         "'local_pk': ...}}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(options["local_cert"], options.get("local_pk"))
    return context


def client_context(options):
    return _client_context(options.get("cafile"), bool(options.get("verify_peer", True)))


@functools.lru_cache(maxsize=None)
def _client_context(cafile, verify_peer):
    """One context per setting, shared by every outgoing connection: making one loads
    the CA store, measured at 16 ms of CPU that stalled the whole process per connect."""
    context = ssl.create_default_context(cafile=cafile)
    if not verify_peer:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Tls:
    def __init__(self, context, server_side, server_hostname=None):
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(self._incoming, self._outgoing,
                                        server_side=server_side,
                                        server_hostname=server_hostname)
        self.established = False
        self._early = []  # plaintext sent before the handshake finished
        self.early_size = 0

    def start(self):
        """Client side: the first handshake bytes to send."""
        self._handshake()
        return self._outgoing.read()

    def receive(self, data):
        """Ciphertext in; returns (plaintext, ciphertext to send back). Raises TlsError."""
        self._incoming.write(data)
        plain = []
        try:
            if not self.established and self._handshake():
                for early in self._early:
                    self._object.write(early)
                self._early, self.early_size = [], 0
            while self.established:
                chunk = self._object.read(65536)
                if not chunk:
                    break
                plain.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            pass
        except ssl.SSLError as error:
            raise TlsError(str(error)) from None
        return b"".join(plain), self._outgoing.read()

    def send(self, plain):
        """Plaintext in; the ciphertext to write (empty before the handshake is done)."""
        if not self.established:
            self._early.append(bytes(plain))
            self.early_size += len(plain)
            return b""
        self._object.write(plain)
        return self._outgoing.read()

    def _handshake(self):
        try:
            self._object.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.established = True
        return True
