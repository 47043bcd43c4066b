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


class SocketTransport:
    """Ciphertext over the SSLSocket's own file descriptor (its timeout applies)."""

    __slots__ = ("sock", "unsent", "_record_left")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.unsent = b""  # the tail of a write the socket did not take (timeout, non-blocking)
        self._record_left = 0  # unwrap(): bytes of the current record still to read

    @property
    def takes_everything(self) -> bool:
        """A blocking socket (with or without timeout) takes whole writes; a non-blocking
        one may refuse ciphertext."""
        return self.sock.gettimeout() != 0.0

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

    def receive_record(self) -> bytes:
        """Ciphertext up to the end of the next record, never beyond: what follows the peer's
        close_notify stays in the socket for the application (STARTTLS, FTPS CCC)."""
        if not self._record_left:
            header = self._receive_exactly(RECORD_HEADER)
            if len(header) < RECORD_HEADER:
                return header
            self._record_left = int.from_bytes(header[3:5], "big")
            return header
        body = self.receive(self._record_left)
        self._record_left -= len(body)
        return body

    def _receive_exactly(self, n: int) -> bytes:
        data = self.receive(n)
        while data and len(data) < n:
            more = self.receive(n - len(data))
            if not more:
                break
            data += more
        return data

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


class BIOTransport:
    """Ciphertext through the caller's two ssl.MemoryBIO objects."""

    __slots__ = ("incoming", "outgoing", "_record_left")

    unsent = b""
    takes_everything = True  # a MemoryBIO grows as needed

    def __init__(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        self.incoming = incoming
        self.outgoing = outgoing
        self._record_left = 0

    def receive(self, size: int = -1) -> bytes:
        data = self.incoming.read(size)
        if data or self.incoming.eof:
            return data
        raise want_read()

    def receive_record(self) -> bytes:
        """As SocketTransport.receive_record: what follows close_notify stays in the BIO."""
        if not self._record_left:
            if self.incoming.pending < RECORD_HEADER and not self.incoming.eof:
                raise want_read()
            header = self.incoming.read(RECORD_HEADER)
            if len(header) == RECORD_HEADER:
                self._record_left = int.from_bytes(header[3:5], "big")
            return header
        body = self.receive(self._record_left)
        self._record_left -= len(body)
        return body

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
