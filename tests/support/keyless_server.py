"""A keyless fasttls server on 127.0.0.1 for the tests: one thread per connection, each driving a
sans-IO TLS over its socket (the signing pause resolved by hand, as an application would), or
the socket operations (`handshake_on`). It answers any request with RESPONSE, then
close_notify, and records what happened to each connection in `results`."""
import threading
import time

import fasttls
from support.accept import accept_until, local_listener

RESPONSE = b"HTTP/1.0 200 OK\r\n\r\nkeyless ok\n"
SOCKET_TIMEOUT = 10.0
MAX_STEPS = 100


class Result:
    def __init__(self):
        self.error = None
        self.version = None
        self.reused = None
        self.requests = 0  # signing requests this connection made
        self.seconds = None  # accept to end of handshake (or failure)


class KeylessServer:
    def __init__(self, ctx, driver="sansio", sign_timeout=5.0):
        self.ctx = ctx
        self.driver = driver
        self.sign_timeout = sign_timeout
        self.results = []
        self._lock = threading.Lock()
        self._listener = local_listener()
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self):
        accept_until(self._listener, self._stop, self._start_serving)

    def _start_serving(self, sock):
        result = Result()
        with self._lock:
            self.results.append(result)
        thread = threading.Thread(target=self._serve, args=(sock, result), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _serve(self, sock, result):
        start = time.monotonic()
        sock.settimeout(SOCKET_TIMEOUT)
        if self.driver in ("helpers", "dropin"):
            try:
                with sock:
                    getattr(self, "_serve_" + self.driver)(sock, result, start)
            except Exception as exc:
                result.seconds = time.monotonic() - start
                result.error = exc
            return
        tls = fasttls.newtls("server", self.ctx)
        try:
            with sock:
                if self.driver == "sansio":
                    self._handshake_sansio(sock, tls, result)
                else:
                    self._handshake_fd(sock, tls, result)
                result.seconds = time.monotonic() - start
                result.version = tls.version()
                result.reused = tls.session_reused()
                data = tls.read() if tls.pending_input else b""  # came with the Finished
                for _ in range(MAX_STEPS):
                    if data or tls.eof:
                        break
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += tls.read(chunk)
                sock.sendall(tls.write(RESPONSE) + tls.close())
        except Exception as exc:  # recorded for the test to look at
            result.seconds = time.monotonic() - start
            result.error = exc

    def _serve_helpers(self, sock, result, start):
        """fasttls.helpers: the handshake (and its signing pause) inside init_responsefunc."""
        sock.settimeout(self.sign_timeout)  # the pause blocks up to the socket's timeout
        tls = fasttls.newtls("server", self.ctx)
        fasttls.init_responsefunc(sock, tls)()
        result.seconds = time.monotonic() - start
        result.version, result.reused = tls.version(), tls.session_reused()
        fasttls.readfunc(sock, tls)()
        fasttls.writefunc(sock, tls)(RESPONSE)
        fasttls.closefunc(tls)()

    def _serve_dropin(self, sock, result, start):
        """The drop-in SSLSocket: do_handshake resolves the pause with the socket's timeout."""
        sock.settimeout(self.sign_timeout)
        with self.ctx.wrap_socket(sock, server_side=True) as tls_sock:
            result.seconds = time.monotonic() - start
            result.version = tls_sock.version()
            result.reused = tls_sock.session_reused
            tls_sock.recv(65536)
            tls_sock.sendall(RESPONSE)
            tls_sock.unwrap()

    def _send_alert_and_raise(self, sock, exc):
        try:
            sock.sendall(getattr(exc, "alert", b""))
        except OSError:
            pass
        raise exc

    def _handshake_sansio(self, sock, tls, result):
        data = b""
        for _ in range(MAX_STEPS):
            try:
                out = tls.handshake(data)
                while tls.pause is not None:
                    result.requests += 1
                    sock.sendall(out)  # what came before the pause (ServerHello...) goes now
                    tls.pause.resolve(self.sign_timeout)
                    out = tls.handshake()
            except fasttls.SSLError as exc:
                self._send_alert_and_raise(sock, exc)
            sock.sendall(out)
            if tls.finished():
                return
            data = sock.recv(65536)
            if not data:
                raise fasttls.SSLEOFError(1, "the client left during the handshake")
        raise AssertionError("handshake did not finish")

    def _handshake_fd(self, sock, tls, result):
        timeout_ms = fasttls.socket_timeout_ms(sock)
        for _ in range(MAX_STEPS):
            if tls.handshake_on(sock.fileno(), timeout_ms):
                return
            if tls.pause is None:
                raise AssertionError("handshake_on returned False without a pause")
            result.requests += 1
            tls.pause.resolve(self.sign_timeout)
        raise AssertionError("handshake did not finish")

    def close(self):
        self._stop.set()
        self._listener.close()
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(SOCKET_TIMEOUT + 5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
