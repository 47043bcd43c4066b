"""Where the stdlib adapter's ciphertext goes: the SSLSocket's own socket, or the two
`ssl.MemoryBIO` objects of an SSLObject. Transports hold no connection state: only ciphertext
a socket could not take yet, which is never more than one write's worth."""
import socket
import ssl
from typing import Optional

RECV_SIZE = 64 * 1024  # one read gathers several records: fewer system calls per byte
RECORD_HEADER = 5


def want_read() -> ssl.SSLWantReadError:
    return ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "The operation did not complete (read)")



def want_write() -> ssl.SSLWantWriteError:
    return ssl.SSLWantWriteError(ssl.SSL_ERROR_WANT_WRITE,
                                 "The operation did not complete (write)")


class _RecordReader:
    """unwrap()'s reading: ciphertext up to the end of the next record, never beyond, so what
    follows the peer's close_notify stays in the socket or the BIO for the application
    (STARTTLS, FTPS CCC). A header that arrives in pieces is kept here between calls (a
    non-blocking socket may have only part of it); the engine holds partial records itself."""

    __slots__ = ("_header", "_record_left")

    def __init__(self) -> None:
        self._header, self._record_left = b"", 0  # unwrap()'s place in a record

    def receive(self, size: int) -> bytes:
        raise NotImplementedError

    def receive_record(self) -> bytes:
        if self._record_left:
            body = self.receive(self._record_left)
            self._record_left -= len(body)
            return body
        part = self.receive(RECORD_HEADER - len(self._header))
        header = self._header + part
        if len(header) == RECORD_HEADER:
            self._record_left = int.from_bytes(header[3:5], "big")
            header = b""
        self._header = header
        return part


class SocketTransport(_RecordReader):
    """The SSLSocket's own socket (its timeout applies). Reads, writes and the handshake go
    through the engine on its file descriptor (SSLSocketAdapter); unwrap() reads and sends
    here, and so does a courtesy alert."""

    __slots__ = ("sock", "unsent")

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.unsent = b""  # the tail of a write the socket did not take (timeout, non-blocking)

    def receive(self, size: int = RECV_SIZE) -> bytes:
        """Some ciphertext; b"" at EOF. Want-read if a non-blocking socket has nothing. A reset
        counts as EOF: the adapter reports truncation (SSLEOFError) as the stdlib does when a
        TLS 1.3 client resets the connection with its session tickets unread."""
        try:
            return socket.socket.recv(self.sock, size)
        except BlockingIOError:
            raise want_read() from None
        except ConnectionResetError:
            return b""

    def send(self, data: bytes) -> None:
        """All of `data`, or raise (timeout, want-write) keeping what was not taken."""
        self.unsent = data
        try:
            sent = socket.socket.send(self.sock, data)
        except BlockingIOError:
            raise want_write() from None
        if sent == len(data):  # the common case: one system call, nothing kept
            self.unsent = b""
            return
        self.unsent = data[sent:]
        self.flush()

    def flush(self) -> None:
        view = memoryview(self.unsent)
        sent = 0
        try:
            while sent < len(view):
                sent += socket.socket.send(self.sock, view[sent:])
        except BlockingIOError:
            raise want_write() from None
        finally:
            self.unsent = bytes(view[sent:]) if sent < len(view) else b""

    def idle(self, tls) -> None:
        pass  # a blocking socket cannot tell idle from busy without another system call

    def owner_socket(self) -> Optional[socket.socket]:
        return self.sock


class BIOTransport(_RecordReader):
    """Ciphertext through the caller's two ssl.MemoryBIO objects."""

    __slots__ = ("incoming", "outgoing")

    unsent = b""

    def __init__(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        super().__init__()
        self.incoming = incoming
        self.outgoing = outgoing

    def receive(self, size: int = -1) -> bytes:
        data = self.incoming.read(size)
        if data or self.incoming.eof:
            return data
        # A new exception each time: one kept and raised again would keep its last traceback,
        # and the frames (connections, contexts) in it, alive until the next raise, and
        # threads raising it at once would overwrite each other's tracebacks.
        raise want_read()

    def send(self, data: bytes) -> None:
        self.outgoing.write(data)

    def flush(self) -> None:
        pass

    def idle(self, tls) -> None:
        """Nothing more to read until the peer sends: the connection is idle, so it gives back
        its record buffers (they return on demand); busy connections never get here."""
        tls.release_buffers()

    def owner_socket(self) -> None:
        return None
