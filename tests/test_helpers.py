"""The tlshelper-style socket helpers end to end, over real loopback sockets (127.0.0.1 only).

Peers: the stdlib ``ssl`` module in a thread, fasttls itself in a thread, stdlib ``http.server``
wrapped with ssl, and curl. Every socket has a timeout, every loop a count limit, and every thread
is joined with a timeout, so a deadlock shows up as a failure rather than a hang."""
import contextlib
import http.server
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
import trustme

import fasttls
from fasttls import helpers
from support.openssl_server import OpenSSLServer
from support.peers import loopback_pair
from support.requires import require_program

TIMEOUT = 5.0  # socket timeout for both ends: bounds every blocking call
JOIN = 20.0  # how long to wait for a peer thread
MAX_STEPS = 1000  # bound for every read loop

V12 = ssl.TLSVersion.TLSv1_2
V13 = ssl.TLSVersion.TLSv1_3
VERSIONS = [pytest.param(V12, id="TLSv1.2"), pytest.param(V13, id="TLSv1.3")]
VERSION_NAME = {V12: "TLSv1.2", V13: "TLSv1.3"}


# ----------------------------------------------------------------------------------- plumbing


class Peer(threading.Thread):
    """Run fn(*args) in a daemon thread; finish() joins with a timeout and re-raises its error."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args = fn, args
        self.result = self.error = None
        self.start()

    def run(self):
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # handed to the test thread by finish()
            self.error = exc

    def finish(self, timeout=JOIN):
        self.join(timeout)
        assert not self.is_alive(), "peer thread did not finish in time (deadlock?)"
        if self.error is not None:
            raise self.error
        return self.result


@contextlib.contextmanager
def tcp_pair(timeout=TIMEOUT):
    """A connected (client, server) pair of loopback TCP sockets, both with a timeout."""
    c, s = loopback_pair(timeout)
    try:
        yield c, s
    finally:
        c.close()
        s.close()


@contextlib.contextmanager
def listener():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(4)
        lsock.settimeout(JOIN)
        yield lsock


def chain_pem(cert):
    return b"".join(blob.bytes() for blob in cert.cert_chain_pems)


def version_kw(version):
    return {} if version is None else {"minimum_version": version, "maximum_version": version}


def f_server_ctx(cert, version=None):
    ctx = fasttls.newctx(**version_kw(version))
    ctx.set_cert(chain_pem(cert), cert.private_key_pem.bytes())
    return ctx


def f_client_ctx(ca, version=None):
    return fasttls.newctx(cadata=ca.cert_pem.bytes(), **version_kw(version))


def s_server_ctx(cert, version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def s_client_ctx(ca, version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


class Conn:
    """The six helpers of one fasttls connection over one socket."""

    def __init__(self, role, sock, ctx, hostname=None):
        self.sock = sock
        self.tls = fasttls.newtls(role, ctx, hostname)
        make_init = helpers.init_requestfunc if role == "client" else helpers.init_responsefunc
        self.init = make_init(sock, self.tls)
        self.read = helpers.readfunc(sock, self.tls)
        self.write = helpers.writefunc(sock, self.tls)
        self.readall = helpers.readallfunc(sock, self.tls)
        self.close = helpers.closefunc(self.tls)


def recv_exact(sock, n):
    """n bytes from a (stdlib ssl or plain) socket; EOFError if it ends first."""
    buf = b""
    for _ in range(MAX_STEPS):
        if len(buf) >= n:
            return buf
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    raise AssertionError("recv_exact: too many steps")


def read_until(read, marker):
    """Call a readfunc without size until `marker` has arrived."""
    buf = b""
    for _ in range(MAX_STEPS):
        if marker in buf:
            return buf
        chunk = read()
        if not chunk:
            raise EOFError(f"clean close before {marker!r}")
        buf += chunk
    raise AssertionError("read_until: too many steps")


def wrap_server(ctx, sock):
    return ctx.wrap_socket(sock, server_side=True, suppress_ragged_eofs=False)


def wrap_client(ctx, sock, hostname="localhost"):
    return ctx.wrap_socket(sock, server_hostname=hostname, suppress_ragged_eofs=False)


REQUEST = b"ping " * 200
PAYLOAD = os.urandom(100_000)


# ------------------------------------------------------------------------ basic exchanges


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_client_against_stdlib_server(ca, server_cert, version, hostname):
    sctx = s_server_ctx(server_cert, version)

    def server(sock):
        ss = wrap_server(sctx, sock)
        req = recv_exact(ss, len(REQUEST))
        ss.sendall(b"pong:" + req)
        # The client's closefunc sends close_notify: a clean b"" here, not SSLEOFError.
        assert ss.recv(100) == b""
        return ss.version()

    with tcp_pair() as (c, s):
        peer = Peer(server, s)
        cli = Conn("client", c, f_client_ctx(ca))  # hostname given to init, as in the reference
        cli.init(hostname)
        assert cli.tls.finished()
        cli.write(REQUEST)
        assert cli.read(5) == b"pong:"
        assert cli.read(len(REQUEST)) == REQUEST
        assert cli.tls.version() == VERSION_NAME[version]
        cli.close()
        assert peer.finish() == VERSION_NAME[version]


@pytest.mark.parametrize("version", VERSIONS)
def test_server_against_stdlib_client(ca, server_cert, version):
    cctx = s_client_ctx(ca, version)

    def client(sock):
        cs = wrap_client(cctx, sock)
        cs.sendall(REQUEST)  # may arrive in one segment with the client Finished (TLS 1.3)
        resp = recv_exact(cs, 5 + len(REQUEST))
        assert cs.recv(100) == b""  # the server's closefunc sent close_notify
        return resp, cs.version()

    with tcp_pair() as (c, s):
        peer = Peer(client, c)
        srv = Conn("server", s, f_server_ctx(server_cert))
        srv.init()
        assert srv.read(len(REQUEST)) == REQUEST
        srv.write(b"pong:" + REQUEST)
        srv.close()
        resp, got_version = peer.finish()
    assert resp == b"pong:" + REQUEST
    assert got_version == VERSION_NAME[version]


@pytest.mark.parametrize("version", VERSIONS)
def test_fasttls_both_roles_bulk(ca, server_cert, version):
    """1 MiB each way; the server reads in odd exact sizes across record boundaries."""
    data = os.urandom(1 << 20)
    sizes = [1, 7, 16383, 16384, 16385, 65536, 100_001, 3]

    def server(sock):
        srv = Conn("server", sock, f_server_ctx(server_cert, version))
        srv.init()
        parts, got = [], 0
        for i in range(MAX_STEPS):
            n = min(sizes[i % len(sizes)], len(data) - got)
            if n == 0:
                break
            part = srv.read(n)
            assert len(part) == n
            parts.append(part)
            got += n
        received = b"".join(parts)
        for off in range(0, len(received), 200_000):
            srv.write(received[off : off + 200_000])
        srv.close()
        return received

    with tcp_pair() as (c, s):
        peer = Peer(server, s)
        cli = Conn("client", c, f_client_ctx(ca, version), "localhost")
        cli.init()
        cli.write(data)
        echoed = b""
        for _ in range(MAX_STEPS):
            if len(echoed) >= len(data):
                break
            chunk = cli.read()
            assert chunk, "clean close before the echo was complete"
            echoed += chunk
        assert cli.readall() == b""  # close_notify follows the echo
        assert cli.read() == b""
        assert cli.tls.eof
        cli.close()
        assert peer.finish() == data
    assert echoed == data


# ------------------------------------------------------------------- server speaks first


GREETING = b"220 hello from the server\r\n"
REPLY = b"HELO client\r\n"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("pairing", ["fasttls-server/stdlib-client", "stdlib-server/fasttls-client",
                                     "fasttls-both"])
def test_server_speaks_first(ca, server_cert, version, pairing):
    """The client never writes first; under TLS 1.3 the client's Finished (returned by the step
    that completes its handshake) and the server's tickets must go out, or both ends wait for
    each other until the socket timeout."""
    f_server = pairing != "stdlib-server/fasttls-client"
    f_client = pairing != "fasttls-server/stdlib-client"

    def fasttls_server(sock):
        srv = Conn("server", sock, f_server_ctx(server_cert, version))
        srv.init()
        srv.write(GREETING)
        assert srv.read(len(REPLY)) == REPLY
        srv.close()

    def stdlib_server(sock):
        ss = wrap_server(s_server_ctx(server_cert, version), sock)
        ss.sendall(GREETING)
        assert recv_exact(ss, len(REPLY)) == REPLY
        ss.unwrap()

    def stdlib_client(sock):
        cs = wrap_client(s_client_ctx(ca, version), sock)
        assert recv_exact(cs, len(GREETING)) == GREETING
        cs.sendall(REPLY)
        assert cs.recv(100) == b""

    with tcp_pair() as (c, s):
        peer = Peer(fasttls_server if f_server else stdlib_server, s)
        if f_client:
            cli = Conn("client", c, f_client_ctx(ca, version), "localhost")
            cli.init()
            assert cli.read(len(GREETING)) == GREETING
            cli.write(REPLY)
            assert cli.readall() == b""
            cli.close()
        else:
            stdlib_client(c)
        peer.finish()


def manual_handshake(sock, tls):
    """Drive a sans-IO TLS object by hand; return the output of the step that completed the
    handshake, NOT sent, so the caller can glue application data to it."""
    out = tls.handshake()
    for _ in range(50):
        if tls.finished():
            return out
        if out:
            sock.sendall(out)
        data = sock.recv(65536)
        assert data, "EOF during manual handshake"
        out = tls.handshake(data)
    raise AssertionError("manual handshake did not finish")


def manual_read(sock, tls, n):
    buf = b""
    for _ in range(MAX_STEPS):
        if len(buf) >= n:
            return buf
        data = sock.recv(65536)
        assert data, "EOF during manual read"
        buf += tls.read(data)
    raise AssertionError("manual_read: too many steps")


def test_server_reads_data_glued_to_client_finished(ca, server_cert):
    """TLS 1.3: the client sends its Finished and the request in ONE segment. The server's
    handshake consumes both; readfunc must decrypt the already-fed request instead of blocking
    on recv (which would wait for data the client never sends: a deadlock, i.e. a timeout)."""

    def client(sock):
        tls = fasttls.newtls("client", f_client_ctx(ca, V13), "localhost")
        finished = manual_handshake(sock, tls)
        sock.sendall(finished + tls.write(REQUEST))
        return manual_read(sock, tls, len(REPLY))

    with tcp_pair() as (c, s):
        peer = Peer(client, c)
        srv = Conn("server", s, f_server_ctx(server_cert, V13))
        srv.init()
        assert srv.read(len(REQUEST)) == REQUEST
        srv.write(REPLY)
        assert peer.finish() == REPLY
        srv.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_client_reads_data_glued_to_server_final_flight(ca, server_cert, version):
    """The server sends its final handshake flight (TLS 1.2: ChangeCipherSpec + Finished;
    TLS 1.3: session tickets) and the greeting in ONE segment; the client must find the greeting
    without another recv."""

    def server(sock):
        tls = fasttls.newtls("server", f_server_ctx(server_cert, version))
        last = manual_handshake(sock, tls)
        sock.sendall(last + tls.write(GREETING))
        return manual_read(sock, tls, len(REPLY))

    with tcp_pair() as (c, s):
        peer = Peer(server, s)
        cli = Conn("client", c, f_client_ctx(ca, version))
        cli.init("localhost")
        assert cli.read(len(GREETING)) == GREETING
        cli.write(REPLY)
        assert peer.finish() == REPLY
        cli.close()


# ------------------------------------------------------- shared buffer, EOF and clean close


def test_readfunc_and_readall_share_one_buffer(ca, server_cert):
    first = b"A" * 100
    go_on = threading.Event()

    def server(sock):
        srv = Conn("server", sock, f_server_ctx(server_cert))
        srv.init()
        srv.write(first)  # one record, then stall until the client has read part of it
        assert go_on.wait(JOIN)
        srv.write(PAYLOAD)
        srv.close()

    with tcp_pair(timeout=2.0) as (c, s):
        peer = Peer(server, s)
        cli = Conn("client", c, f_client_ctx(ca), "localhost")
        cli.init()
        got = cli.read(10)
        assert got == first[:10]
        # The other 90 bytes are buffered: returned at once, no recv (the peer is stalled, so
        # blocking would end in a timeout).
        rest = cli.read()
        assert rest == first[10:]
        go_on.set()
        got += rest + cli.read(1234)  # part of PAYLOAD through readfunc...
        got += cli.readall()  # ...and readall picks up whatever readfunc buffered
        assert got == first + PAYLOAD
        assert cli.read() == b""
        cli.close()
        peer.finish()


def test_readall_after_readfunc_buffered_everything(ca, server_cert):
    """readfunc(sz) pulls a whole 64 KiB receive into the buffer; readall must return it."""

    def server(sock):
        srv = Conn("server", sock, f_server_ctx(server_cert))
        srv.init()
        srv.write(PAYLOAD)
        srv.close()

    with tcp_pair() as (c, s):
        peer = Peer(server, s)
        cli = Conn("client", c, f_client_ctx(ca), "localhost")
        cli.init()
        head = cli.read(1)
        assert head + cli.readall() == PAYLOAD
        cli.close()
        peer.finish()


def truncating_server(server_cert, data):
    def server(sock):
        srv = Conn("server", sock, f_server_ctx(server_cert))
        srv.init()
        if data:
            srv.write(data)
        sock.shutdown(socket.SHUT_WR)  # TCP FIN without close_notify

    return server


@pytest.mark.parametrize("how", ["read-sz", "read", "readall"])
def test_truncation_raises_eof(ca, server_cert, how):
    data = b"partial data"
    with tcp_pair() as (c, s):
        peer = Peer(truncating_server(server_cert, data), s)
        cli = Conn("client", c, f_client_ctx(ca), "localhost")
        cli.init()
        peer.finish()
        if how == "read-sz":
            with pytest.raises(fasttls.SSLEOFError, match=f"{len(data)} of 100") as info:
                cli.read(100)
            assert cli.read(len(data)) == data  # what arrived is kept
        elif how == "read":
            assert cli.read() == data
            with pytest.raises(fasttls.SSLEOFError, match="close_notify") as info:
                cli.read()
        else:
            with pytest.raises(fasttls.SSLEOFError) as info:
                cli.readall()
            assert cli.read(len(data)) == data  # nothing lost
        assert isinstance(info.value, ssl.SSLEOFError)
        assert not cli.tls.eof
        cli.close()


def test_truncation_during_handshake(ca, server_cert):
    with tcp_pair() as (c, s):
        s.shutdown(socket.SHUT_WR)  # the server's FIN comes before any handshake message
        cli = Conn("client", c, f_client_ctx(ca), "localhost")
        with pytest.raises(fasttls.SSLEOFError, match="handshake"):
            cli.init()


def test_clean_close_against_fasttls(ca, server_cert):
    data = b"complete data"

    def server(sock):
        srv = Conn("server", sock, f_server_ctx(server_cert))
        srv.init()
        srv.write(data)
        srv.close()
        sock.shutdown(socket.SHUT_WR)

    with tcp_pair() as (c, s):
        peer = Peer(server, s)
        cli = Conn("client", c, f_client_ctx(ca), "localhost")
        cli.init()
        peer.finish()
        assert cli.readall() == data
        assert cli.tls.eof
        assert cli.read() == b""
        assert cli.read() == b""
        assert cli.readall() == b""
        with pytest.raises(fasttls.SSLEOFError, match="0 of 1"):
            cli.read(1)
        cli.close()


def test_clean_close_against_stdlib(ca, server_cert):
    data = b"complete data"

    def server(sock):
        ss = wrap_server(s_server_ctx(server_cert), sock)
        ss.sendall(data)
        ss.unwrap()  # sends close_notify, waits for the client's

    with tcp_pair() as (c, s):
        peer = Peer(server, s)
        cli = Conn("client", c, f_client_ctx(ca), "localhost")
        cli.init()
        assert cli.read(4) == data[:4]
        assert cli.read() == data[4:]
        assert cli.read() == b""
        cli.close()  # the stdlib's unwrap() returns only when this close_notify arrives
        peer.finish()


def test_closefunc_is_best_effort(ca, server_cert):
    with tcp_pair() as (c, s):
        peer = Peer(lambda sock: Conn("server", sock, f_server_ctx(server_cert)).init(), s)
        cli = Conn("client", c, f_client_ctx(ca), "localhost")
        cli.init()
        peer.finish()
        c.close()  # socket gone: sending close_notify fails, closefunc must not raise
        cli.close()
        cli.close()  # twice is fine


# ------------------------------------------------------------- output produced by reading


def test_keyupdate_reply_leaves_while_reading(ca, server_cert, tmp_path):
    """s_server sends a KeyUpdate asking for one back ("K"), then data. Reading that data must
    send our KeyUpdate at once, not hold it until the next write (reference weakness 5)."""
    openssl = require_program("openssl")
    server_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    server_cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    srv = OpenSSLServer(openssl, tmp_path, "-tls1_3")
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as sock:
            cli = Conn("client", sock, f_client_ctx(ca), "localhost")
            cli.init()
            srv.command(b"K\n")  # KeyUpdate, update_requested
            srv.wait_for(lambda line: line.startswith(">>>") and "KeyUpdate" in line,
                         "its KeyUpdate going out")
            srv.command(b"after key update\n")  # s_server reads one command per stdin read
            assert read_until(cli.read, b"\n") == b"after key update\n"
            # Nothing written by us since: our KeyUpdate must arrive anyway.
            srv.wait_for(lambda line: line.startswith("<<<") and "KeyUpdate" in line,
                         "our KeyUpdate reply (sent while reading, before any write)")
            cli.write(b"still talking\n")  # and the new keys work both ways
            srv.wait_for(lambda line: "still talking" in line, "our data after the key update")
            cli.close()
    finally:
        srv.stop()


# ------------------------------------------------------------------------------- timeouts


def stalling_server(server_cert, released, data=b""):
    def server(sock):
        srv = Conn("server", sock, f_server_ctx(server_cert))
        srv.init()
        if data:
            srv.write(data)
        released.wait(JOIN)

    return server


@pytest.mark.parametrize("how", ["read", "read-sz", "readall"])
def test_timeout_is_honoured(ca, server_cert, how):
    released = threading.Event()
    with tcp_pair() as (c, s):
        peer = Peer(stalling_server(server_cert, released, b"abc"), s)
        try:
            cli = Conn("client", c, f_client_ctx(ca), "localhost")
            cli.init()
            c.settimeout(0.5)
            if how == "read":
                assert cli.read() == b"abc"  # then nothing more comes
            start = time.monotonic()
            with pytest.raises(socket.timeout) as info:
                if how == "read":
                    cli.read()
                elif how == "read-sz":
                    cli.read(10)
                else:
                    cli.readall()
            assert time.monotonic() - start < 3.0
            if sys.version_info >= (3, 10):
                assert isinstance(info.value, TimeoutError)
        finally:
            released.set()
        peer.finish()


def test_handshake_timeout(ca):
    with tcp_pair(timeout=0.5) as (c, s):  # the server accepts TCP but never speaks TLS
        cli = Conn("client", c, f_client_ctx(ca), "localhost")
        start = time.monotonic()
        with pytest.raises(socket.timeout):
            cli.init()
        assert time.monotonic() - start < 3.0


# -------------------------------------------------------------------- alerts on failure


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("failure", ["unknown-ca", "wrong-hostname"])
def test_client_sends_alert_on_handshake_failure(ca, server_cert, version, failure):
    sctx = s_server_ctx(server_cert, version)

    def server(sock):
        try:
            wrap_server(sctx, sock)
        except (ssl.SSLError, OSError) as exc:
            return exc
        return None

    trusted = trustme.CA() if failure == "unknown-ca" else ca
    hostname = "localhost" if failure == "unknown-ca" else "not-this-host.example"
    with tcp_pair() as (c, s):
        peer = Peer(server, s)
        cli = Conn("client", c, f_client_ctx(trusted, version))
        with pytest.raises(fasttls.SSLCertVerificationError):
            cli.init(hostname)
        seen = peer.finish()  # join before closing our socket: the alert must be read first
    # The stdlib server saw a TLS alert, not a bare EOF or a reset.
    assert isinstance(seen, ssl.SSLError), repr(seen)
    assert not isinstance(seen, ssl.SSLEOFError), repr(seen)
    assert "ALERT" in str(seen).upper(), repr(seen)


def test_server_sends_alert_on_handshake_failure(ca, server_cert):
    cctx = s_client_ctx(ca, V13)

    def client(sock):
        try:
            wrap_client(cctx, sock)
        except (ssl.SSLError, OSError) as exc:
            return exc
        return None

    with tcp_pair() as (c, s):
        peer = Peer(client, c)
        srv = Conn("server", s, f_server_ctx(server_cert, V12))  # no common version
        with pytest.raises(fasttls.SSLError) as info:
            srv.init()
        assert info.value.alert  # there was an alert to send...
        seen = peer.finish()
    # ...and the client received it.
    assert isinstance(seen, ssl.SSLError), repr(seen)
    assert not isinstance(seen, ssl.SSLEOFError), repr(seen)
    assert "ALERT" in str(seen).upper() and "VERSION" in str(seen).upper(), repr(seen)


# ----------------------------------------------------- HTTPS written like the Lua reference


def gen_interface(protocol, fd, ctx):
    """The Lua reference's gen_interface(protocol, fd), https branch, line for line."""
    if protocol == "https":
        tls_ctx = fasttls.newtls("client", ctx)
        return {
            "init": fasttls.init_requestfunc(fd, tls_ctx),
            "close": fasttls.closefunc(tls_ctx),
            "read": fasttls.readfunc(fd, tls_ctx),
            "write": fasttls.writefunc(fd, tls_ctx),
            "readall": fasttls.readallfunc(fd, tls_ctx),
        }
    raise ValueError(f"Invalid protocol: {protocol}")


def http_get(interface, host, path):
    """What the reference's httpc does with an interface: init(host), write the request, read
    the header block, then exactly Content-Length bytes (or readall without one)."""
    if interface["init"]:
        interface["init"](host)
    interface["write"](
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    buf = read_until(interface["read"], b"\r\n\r\n")
    head, _, body = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body += interface["read"](int(headers["content-length"]) - len(body))
    else:
        body += interface["readall"]()
    if interface["close"]:
        interface["close"]()
    return status, headers, body


BODY = b"hello over https\n" * 500


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = TIMEOUT  # per-connection socket timeout (also bounds the lazy handshake)

    def do_GET(self):
        body = BODY + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("version", VERSIONS)
def test_https_get_like_the_lua_client(ca, server_cert, version):
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    httpd.socket = s_server_ctx(server_cert, version).wrap_socket(
        httpd.socket, server_side=True, do_handshake_on_connect=False
    )
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        ctx = f_client_ctx(ca)
        for path in ["/first", "/second"]:  # one context, two connections, as SSLCTX_CLIENT
            fd = socket.create_connection(httpd.server_address, timeout=TIMEOUT)
            with fd:
                status, headers, body = http_get(gen_interface("https", fd, ctx), "localhost", path)
            assert status == 200
            assert headers["content-type"] == "text/plain"
            assert body == BODY + path.encode()
    finally:
        httpd.shutdown()
        thread.join(JOIN)
        httpd.server_close()
    assert not thread.is_alive()
    with pytest.raises(ValueError, match="Invalid protocol"):
        gen_interface("gopher", None, None)


# ------------------------------------------------------------------- curl as the client


def serve_https_once(lsock, ctx):
    s, _ = lsock.accept()
    s.settimeout(TIMEOUT)
    with s:
        srv = Conn("server", s, ctx)
        srv.init()
        request = read_until(srv.read, b"\r\n\r\n")
        srv.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
        )
        srv.close()
        return request, srv.tls.version()


@pytest.mark.parametrize("version", VERSIONS)
def test_curl_fetches_from_helper_server(ca, server_cert, version):
    curl = require_program("curl")
    flag = {V12: ["--tlsv1.2", "--tls-max", "1.2"], V13: ["--tlsv1.3", "--tls-max", "1.3"]}[version]
    with listener() as lsock, ca.cert_pem.tempfile() as cafile:
        port = lsock.getsockname()[1]
        peer = Peer(serve_https_once, lsock, f_server_ctx(server_cert))
        proc = subprocess.run(
            [curl, "-sS", "--http1.1", "--max-time", "15", "--cacert", cafile,
             "--resolve", f"localhost:{port}:127.0.0.1", *flag, f"https://localhost:{port}/curl"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
        )
        request, got_version = peer.finish()
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == BODY
    assert request.startswith(b"GET /curl HTTP/1.1\r\n")
    assert got_version == VERSION_NAME[version]
