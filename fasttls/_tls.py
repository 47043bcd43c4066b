"""TLS: one TLS connection as a sans-IO object (the reference's `newtls`).

Theory of operation
-------------------
Bytes go in and come out; no socket is touched. `handshake()`, `read()` and `write()` each make
exactly one call into the C engine, which feeds the received ciphertext to OpenSSL, does all the
work it allows, and reports "needs more data" as a status rather than an exception (an exception
per want-read is where much of the stdlib's time goes on small messages).

* Everything waiting to be sent is returned by the call that produced it, including on the
  handshake step that completes the handshake: the TLS 1.3 client Finished and the TLS 1.2
  server's final flight (the reference dropped those, deadlocking server-speaks-first protocols).
* Reading can produce bytes to send (a KeyUpdate reply, an alert); they wait in the connection
  (`pending_output`) and leave with the next `write()`, which with no data only flushes.
* Ciphertext that arrives with the last handshake flight (e.g. a server that speaks first) is
  kept and decrypted by the next `read()`.
* A clean close (the peer's close_notify) sets `eof` and makes `read()` return b"" from then on;
  nothing received after close_notify is ever returned. A transport EOF without close_notify is
  truncation: the socket layer (fasttls.helpers) reports it as SSLEOFError.
* A fatal error leaves the connection broken; the alert OpenSSL produced for the peer is on the
  exception (`exc.alert`), to be sent before giving up. Plaintext decrypted before the error was
  authenticated record by record, so `read()` returns it first and raises on the next call.
* Renegotiation is refused (SSL_OP_NO_RENEGOTIATION): TLS 1.2 renegotiation requests get a
  no_renegotiation warning alert; TLS 1.3 has none.
"""
import socket
import ssl
import weakref
from typing import Optional, Union

from fasttls._binding import ffi, lib
from fasttls._certinfo import certificate_der, certificate_dict
from fasttls._context import Context
from fasttls._errors import SSLError, SSLZeroReturnError, error_from_conn, error_from_queue

__all__ = ["TLS", "Session", "newtls"]

_OK = lib.FASTTLS_OK
_CLOSED = lib.FASTTLS_CLOSED
_ERROR = lib.FASTTLS_ERROR
# Bound once: a module global is cheaper to reach than an attribute of `lib` on every call.
_unpack = ffi.unpack
_engine_read = lib.fasttls_read
_engine_write = lib.fasttls_write
_from_buffer = ffi.from_buffer

# Input: bytes go to C as they are (no copy); other buffers through ffi.from_buffer (no copy).
Buffer = Union[bytes, bytearray, memoryview]


# Server connections whose context has an sni_callback, by engine address, for the callback.
_servers_by_conn: "weakref.WeakValueDictionary[int, TLS]" = weakref.WeakValueDictionary()


def _is_ip_address(name: str) -> bool:
    # inet_pton is C and strict (no "1.2.3" shorthand); ipaddress costs ~10 us a connection.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, name)
            return True
        except OSError:
            pass
    return False


def _peer_name(hostname: str) -> "tuple[str, bool]":
    """(the name to send and check, whether it is an IP address) for a client's hostname."""
    name = hostname.strip("[]")
    if not name or "\0" in name:
        raise ValueError(f"invalid hostname {hostname!r}")
    if _is_ip_address(name):
        return name, True
    name = name.rstrip(".")
    if not name:
        raise ValueError(f"invalid hostname {hostname!r}")
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    return name, False


def _address(conn) -> int:
    return int(ffi.cast("uintptr_t", conn))


@ffi.def_extern()
def fasttls_on_server_name(conn):
    """The engine's SNI hook (GIL held, inside handshake()): run the context's sni_callback.
    Returns 1 to go on, 0 to abort the handshake; an exception is kept for handshake()."""
    tls = _servers_by_conn.get(_address(conn))
    if tls is None:
        return 1
    callback = tls._context.sni_callback
    if callback is None:
        return 1
    raw = lib.fasttls_conn_server_name(conn)
    name = ffi.string(raw).decode("ascii", "replace") if raw != ffi.NULL else None
    try:
        chosen = callback(tls, name)
        if chosen is not None and chosen is not tls._context:
            if not isinstance(chosen, Context):
                raise TypeError(f"sni_callback must return a Context or None, not {chosen!r}")
            if not lib.fasttls_conn_switch_ctx(conn, chosen._ctx):  # locks `chosen` itself
                raise SSLError(ssl.SSL_ERROR_SSL, "cannot switch to the context chosen by "
                               "sni_callback")
            tls._context = chosen
    except BaseException as exc:  # re-raised by handshake(); never across the C frames
        tls._callback_error = exc
        return 0
    return 1


class Session:
    """A TLS session from a finished client connection, for `newtls(..., session=)`."""

    __slots__ = ("_ptr",)

    def __init__(self, ptr) -> None:
        self._ptr = ffi.gc(ptr, lib.SSL_SESSION_free)

    @property
    def resumable(self) -> bool:
        return bool(lib.SSL_SESSION_is_resumable(self._ptr))


class TLS:
    """One TLS connection, client or server, over bytes. See the module docstring."""

    __slots__ = ("_conn", "_context", "_server", "_hostname", "_started", "_done", "_closed",
                 "_broken", "_pending_error", "eof", "_readable", "_writable", "_callback_error",
                 "owner", "_release", "__weakref__")

    def __init__(self, method: str, ctx: Context, hostname: Optional[str] = None,
                 session: Optional[Session] = None) -> None:
        if method not in ("client", "server"):
            raise ValueError(f'method must be "client" or "server", not {method!r}')
        if not isinstance(ctx, Context):
            raise TypeError("ctx must be a fasttls Context (from newctx())")
        self._server = method == "server"
        if not self._server:
            ctx._prepare_client()
        # The struct's memory is Python's (freed after every finalizer has run); the SSL object
        # is released by a finalizer of its own, after which operations fail cleanly (see
        # fasttls_conn_init).
        conn = ffi.new("fasttls_conn *")
        if lib.fasttls_conn_init(conn, ctx._ctx, self._server) != 1:  # under ctx's read lock
            raise error_from_queue("cannot create a TLS connection")
        self._conn = conn
        self._release = ffi.gc(conn, lib.fasttls_conn_release)
        self._callback_error: Optional[BaseException] = None
        if self._server and ctx.sni_callback is not None:
            _servers_by_conn[_address(conn)] = self
        self._context = ctx  # the SSL holds the SSL_CTX; this keeps the Python side too
        self._hostname: Optional[str] = None
        self._started = self._done = self._closed = self._broken = False
        self._pending_error: Optional[SSLError] = None
        self.eof = False
        self.owner = None  # free for the application (the stdlib layer keeps its SSLObject here)
        # The fast paths test one flag each: handshake done, and nothing closed or failed.
        self._readable = self._writable = False
        lib.fasttls_conn_set_verify(conn, ctx._openssl_verify_mode(self._server))
        if hostname is not None:
            self.set_hostname(hostname)
        if session is not None:
            if self._server:
                raise ValueError("session can only be given to a client connection")
            if not lib.SSL_set_session(conn.ssl, session._ptr):
                raise SSLError(ssl.SSL_ERROR_SSL, "cannot use this session")

    def set_hostname(self, hostname: Optional[str]) -> None:
        """The server's name: sent as SNI (if a DNS name) and checked against its certificate.
        Only before the handshake starts."""
        if self._started:
            raise ValueError("set_hostname() must come before the handshake starts")
        if self._server or hostname is None:
            self._hostname = None if self._server else hostname
            return
        if isinstance(hostname, bytes):
            hostname = hostname.decode("ascii")
        name, is_ip = _peer_name(hostname)
        check = self._context._hostname_check_level()
        if not lib.fasttls_conn_set_peer_name(self._conn, name.encode(), is_ip, check, True):
            raise ValueError(f"invalid hostname {hostname!r}")
        self._hostname = hostname

    # ---- the four operations ----

    def handshake(self, data: Buffer = b"") -> bytes:
        """Feed received bytes, advance the handshake, return all bytes to send."""
        if not self._started:
            self._start()
        if self._broken:
            raise SSLError(ssl.SSL_ERROR_SSL, "the connection failed earlier and is unusable")
        if type(data) is not bytes:
            data = ffi.from_buffer(data)
        status = lib.fasttls_handshake(self._conn, data, len(data))
        if status == _ERROR:
            error = self._failure()
            if self._callback_error is not None:
                callback_error, self._callback_error = self._callback_error, None
                callback_error.alert = error.alert  # still to be sent to the peer
                raise callback_error
            raise error
        if status == _OK and not self._done:
            self._done = self._readable = True
            self._writable = not self._closed
        return self._take_output()

    def finished(self) -> bool:
        return self._done

    def read(self, data: Buffer = b"") -> bytes:
        """Feed received ciphertext; return all plaintext available now (b"" if none yet, or
        after the peer's close_notify: see `eof`)."""
        if not self._readable:
            return self._read_exceptional()
        if type(data) is not bytes:
            data = _from_buffer(data)
        conn = self._conn
        n = _engine_read(conn, data, len(data))
        if n > 0:
            return _unpack(conn.plain, n)
        if n == 0:
            return b""
        return self._read_ended(n)

    def _read_ended(self, status: int) -> bytes:
        """close_notify or a failure: return what was decrypted before it, if anything."""
        conn = self._conn
        plaintext = _unpack(conn.plain, conn.plain_len) if conn.plain_len else b""
        self._readable = False
        if status == _CLOSED:
            self.eof = True
            return plaintext
        error = self._failure()
        if not plaintext:
            raise error
        self._pending_error = error
        return plaintext

    def _read_exceptional(self) -> bytes:
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        if self._broken:
            raise SSLError(ssl.SSL_ERROR_SSL, "the connection failed earlier and is unusable")
        if not self._done:
            raise SSLError(ssl.SSL_ERROR_SSL, "read() before the handshake finished")
        return b""  # after close_notify: whatever follows is not data

    def write(self, data: Buffer = b"") -> bytes:
        """Encrypt `data`; return the ciphertext to send, preceded by anything pending.
        With no data, just flush what is pending."""
        if not self._writable:
            if data:
                self._refuse_write()
            return self._take_output()
        if type(data) is not bytes:
            data = _from_buffer(data)
        conn = self._conn
        n = _engine_write(conn, data, len(data))
        if n > 0:
            return _unpack(conn.out, n)
        if n == 0:
            return b""
        raise self._failure()

    def _refuse_write(self):
        if self._closed:
            raise SSLZeroReturnError(ssl.SSL_ERROR_ZERO_RETURN, "write() after close()")
        if self._broken:
            raise SSLError(ssl.SSL_ERROR_SSL, "the connection failed earlier and is unusable")
        raise SSLError(ssl.SSL_ERROR_SSL, "write() before the handshake finished")

    def close(self) -> bytes:
        """The close_notify alert to send (b"" if the handshake never finished or the
        connection failed). Safe to call more than once."""
        if self._closed:
            return b""
        self._closed = True
        self._writable = False
        if not self._done or self._broken:
            return b""
        if lib.fasttls_shutdown(self._conn) == _ERROR:
            self._broken = True
        out = self._take_output()
        lib.fasttls_conn_release_buffers(self._conn)
        return out

    def __enter__(self) -> "TLS":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- internals ----

    def _start(self) -> None:
        self._started = True
        ctx = self._context
        if (not self._server and self._hostname is None and ctx.check_hostname
                and ctx._openssl_verify_mode(False) != lib.SSL_VERIFY_NONE):
            raise ValueError("check_hostname requires a hostname: pass newtls(..., hostname=) "
                             "or set ctx.check_hostname = False (insecure)")

    def _take_output(self) -> bytes:
        conn = self._conn
        n = conn.out_len
        if not n:
            return b""
        out = _unpack(conn.out, n)
        conn.out_len = 0
        return out

    def _failure(self) -> SSLError:
        self._broken = True
        self._readable = self._writable = False
        if self._conn.ssl == ffi.NULL:
            return SSLError(ssl.SSL_ERROR_SSL, "the connection was already released")
        error = error_from_conn(self._conn, self._hostname)
        error.alert = self._take_output()
        return error

    @property
    def pending_input(self) -> bool:
        """Received ciphertext is waiting (e.g. data that came with the last handshake
        flight): `read()` with no new data will decrypt it."""
        return self._conn.held_len > 0

    @property
    def pending_output(self) -> bool:
        """Bytes are waiting to be sent: `write()` returns them."""
        return self._conn.out_len > 0

    def release_buffers(self) -> None:
        """Free the record buffers of an idle connection; they come back when needed."""
        lib.fasttls_conn_release_buffers(self._conn)

    # ---- information ----

    def _ssl(self):
        """The SSL object, for the information calls; ValueError once released."""
        ssl_object = self._conn.ssl
        if ssl_object == ffi.NULL:
            raise ValueError("the TLS connection was already released")
        return ssl_object

    def version(self) -> Optional[str]:
        return ffi.string(lib.SSL_get_version(self._ssl())).decode() if self._done else None

    def cipher(self):
        """(name, protocol version, secret bits), like the stdlib's, or None."""
        c = lib.SSL_get_current_cipher(self._ssl()) if self._done else ffi.NULL
        if c == ffi.NULL:
            return None
        return (ffi.string(lib.SSL_CIPHER_get_name(c)).decode(),
                ffi.string(lib.SSL_CIPHER_get_version(c)).decode(),
                lib.SSL_CIPHER_get_bits(c, ffi.NULL))

    def selected_alpn_protocol(self) -> Optional[str]:
        data = ffi.new("const unsigned char **")
        length = ffi.new("unsigned int *")
        lib.SSL_get0_alpn_selected(self._ssl(), data, length)
        if not length[0]:
            return None
        return ffi.unpack(ffi.cast("char *", data[0]), length[0]).decode("ascii", "replace")

    def session_reused(self) -> bool:
        return bool(lib.SSL_session_reused(self._ssl()))

    @property
    def session(self) -> Optional[Session]:
        ptr = lib.SSL_get1_session(self._ssl())
        return Session(ptr) if ptr != ffi.NULL else None

    @property
    def server_side(self) -> bool:
        return self._server

    @property
    def server_hostname(self) -> Optional[str]:
        return self._hostname

    def getpeercert(self, binary_form: bool = False):
        """The peer's certificate: a dict like the stdlib's ({} if it was not verified), or DER
        bytes with binary_form=True; None before the handshake or if the peer sent none."""
        if not self._done:
            return None
        x509 = lib.fasttls_peer_certificate(self._ssl())
        if x509 == ffi.NULL:
            return None
        x509 = ffi.gc(x509, lib.X509_free)
        if binary_form:
            return certificate_der(x509)
        if self._context._openssl_verify_mode(self._server) == lib.SSL_VERIFY_NONE:
            return {}
        return certificate_dict(x509)


def newtls(method: str, ctx: Context, hostname: Optional[str] = None,
           session: Optional[Session] = None) -> TLS:
    """A new connection: `method` is "client" or "server". See TLS."""
    return TLS(method, ctx, hostname, session)
