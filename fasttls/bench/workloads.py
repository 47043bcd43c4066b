"""The core rows of ``python -m fasttls bench``: in-memory transfers and handshakes (a fasttls
sans-IO pair against a stdlib SSLObject/MemoryBIO pair), and loopback socket rows (fasttls's
socket helpers against ssl.SSLSocket, both talking to one stdlib-ssl peer process, ``peer``)."""
import hashlib
import os
import random
import socket
import ssl

from fasttls.bench.harness import HOSTNAME, BenchError, Row
from fasttls.bench.peer import ACK_LEN, BLOCK, READ_CHUNK, header, pattern

PINGPONG_SIZE = 64


# ---------------------------------------------------------------------------------------------
# in-memory pairs


def ft_pair(env):
    """A connected fasttls client/server pair (handshake done, session tickets consumed)."""
    ft = env.fasttls
    client = ft.newtls("client", env.ft_client_ctx, HOSTNAME)
    server = ft.newtls("server", env.ft_server_ctx)
    to_server = client.handshake()
    for _ in range(20):
        to_client = server.handshake(to_server)
        if client.finished():
            if client.read(to_client) != b"":
                raise BenchError("unexpected plaintext during the fasttls handshake")
            break
        to_server = client.handshake(to_client)
        if client.finished() and server.finished() and not to_server:
            break
    if not (client.finished() and server.finished()):
        raise BenchError("fasttls handshake did not complete")
    env.check_cipher("fasttls", "client", client)
    env.check_cipher("fasttls", "server", server)
    return client, server


def _handshake_step(sslobj):
    """One do_handshake() of a stdlib SSLObject: True once its handshake is complete."""
    try:
        sslobj.do_handshake()
        return True
    except ssl.SSLWantReadError:
        return False


class StdPair:
    """A connected stdlib SSLObject pair over four MemoryBIOs."""

    def __init__(self, env):
        self.c_in, self.c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.s_in, self.s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = env.std_client_ctx.wrap_bio(self.c_in, self.c_out, server_hostname=HOSTNAME)
        self.server = env.std_server_ctx.wrap_bio(self.s_in, self.s_out, server_side=True)
        done_c = done_s = False
        for _ in range(20):
            done_c = done_c or _handshake_step(self.client)
            self.s_in.write(self.c_out.read())
            done_s = done_s or _handshake_step(self.server)
            self.c_in.write(self.s_out.read())
            if done_c and done_s:
                break
        else:
            raise BenchError("stdlib handshake did not complete")
        try:                                # consume the session tickets, like the fasttls pair
            if self.client.read(READ_CHUNK):
                raise BenchError("unexpected plaintext during the stdlib handshake")
        except ssl.SSLWantReadError:
            pass
        env.check_cipher("stdlib", "client", self.client)
        env.check_cipher("stdlib", "server", self.server)


def std_read_all(sslobj, incoming):
    """The stdlib idiom for "all plaintext available now" (no exception when the input ends
    exactly on a record boundary)."""
    parts = []
    while incoming.pending:
        try:
            parts.append(sslobj.read(READ_CHUNK))
        except ssl.SSLWantReadError:
            break
    return b"".join(parts)


def setup_transfer(env, side, size):
    """``run(n)``: n messages of ``size`` bytes, client write -> server read. Returns bytes read."""
    msg = os.urandom(size)
    digest = hashlib.sha256(msg).digest()
    if side == "fasttls":
        client, server = ft_pair(env)
        if hashlib.sha256(server.read(client.write(msg))).digest() != digest:
            raise BenchError("fasttls: received plaintext differs from what was sent")

        def run(n):
            cw = client.write
            sr = server.read
            m = msg
            total = 0
            for _ in range(n):
                total += len(sr(cw(m)))
            return total
    else:
        pair = StdPair(env)
        if std_read_all(pair.server, pair.s_in):
            raise BenchError("stdlib: stray plaintext before the first message")
        pair.client.write(msg)
        pair.s_in.write(pair.c_out.read())
        if hashlib.sha256(std_read_all(pair.server, pair.s_in)).digest() != digest:
            raise BenchError("stdlib: received plaintext differs from what was sent")

        def run(n):
            cw = pair.client.write
            drain = pair.c_out.read
            feed = pair.s_in.write
            incoming = pair.s_in
            sr = pair.server.read
            WantRead = ssl.SSLWantReadError
            m = msg
            total = 0
            for _ in range(n):
                cw(m)
                feed(drain())
                parts = []
                while incoming.pending:
                    try:
                        parts.append(sr(READ_CHUNK))
                    except WantRead:
                        break
                total += len(b"".join(parts))
            return total
    return run


def setup_handshake(env, side):
    """``run(n)``: n full TLS 1.3 handshakes, new connection objects each time, contexts reused.

    The client verifies the server certificate (CA and hostname) and consumes the session
    tickets, on both sides. Returns the number of completed pairs."""
    if side == "fasttls":
        newtls = env.fasttls.newtls
        cctx, sctx = env.ft_client_ctx, env.ft_server_ctx

        def run(n):
            done = 0
            for _ in range(n):
                c = newtls("client", cctx, HOSTNAME)
                s = newtls("server", sctx)
                server_flight = s.handshake(c.handshake())
                tickets = s.handshake(c.handshake(server_flight))
                if c.read(tickets) or not (c.finished() and s.finished()):
                    raise BenchError("fasttls handshake did not complete in one round trip")
                done += 1
            return done

        c, s = ft_pair(env)          # cipher/verification check on a representative pair
        if c.getpeercert() in (None, {}):
            raise BenchError("fasttls client did not verify the server certificate")
    else:
        cctx, sctx = env.std_client_ctx, env.std_server_ctx
        MemoryBIO = ssl.MemoryBIO

        def run(n):
            WantRead = ssl.SSLWantReadError
            done = 0
            for _ in range(n):
                c_in, c_out, s_in, s_out = MemoryBIO(), MemoryBIO(), MemoryBIO(), MemoryBIO()
                c = cctx.wrap_bio(c_in, c_out, server_hostname=HOSTNAME)
                s = sctx.wrap_bio(s_in, s_out, server_side=True)
                try:
                    c.do_handshake()
                except WantRead:
                    pass
                s_in.write(c_out.read())
                try:
                    s.do_handshake()
                except WantRead:
                    pass
                c_in.write(s_out.read())
                c.do_handshake()            # raises if not complete
                s_in.write(c_out.read())
                s.do_handshake()
                c_in.write(s_out.read())    # session tickets
                try:
                    c.read(READ_CHUNK)
                except WantRead:
                    pass
                done += 1
            return done

        pair = StdPair(env)
        if not pair.client.getpeercert():
            raise BenchError("stdlib client did not verify the server certificate")
    if run(2) != 2:
        raise BenchError(f"{side}: handshake count mismatch")
    return run



# ---------------------------------------------------------------------------------------------
# socket workloads (client in this process, stdlib-ssl peer in another)


class _Client:
    """One connection to the peer through either library: sendall / recv_exact / close."""

    def __init__(self, env, side):
        self.side = side
        sock = socket.create_connection(env.peer())
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if side == "fasttls":
            ft = env.fasttls
            from fasttls import helpers
            tls = ft.newtls("client", env.ft_client_ctx, HOSTNAME)
            helpers.init_requestfunc(sock, tls)()
            env.check_cipher("fasttls", "client", tls)
            self.tls = tls
            self.write = helpers.writefunc(sock, tls)
            self.read_exact = helpers.readfunc(sock, tls)       # f(sz): exactly sz bytes
            close = helpers.closefunc(tls)

            def closer():
                try:
                    close()
                finally:
                    sock.close()
        else:
            ssock = env.std_client_ctx.wrap_socket(sock, server_hostname=HOSTNAME)
            env.check_cipher("stdlib", "client", ssock)
            self.ssock = ssock
            self.write = ssock.sendall
            self.read_exact = lambda sz: std_recv_exact(ssock.recv, sz)
            closer = ssock.close
        self.sock = sock
        self.close = closer
        env.on_close(closer)


def std_recv_exact(recv, sz):
    data = recv(sz)
    while len(data) < sz:
        more = recv(sz - len(data))
        if not more:
            raise ssl.SSLEOFError("peer closed early")
        data += more
    return data


def setup_socket_bulk(env, side):
    """``run(n)``: send n MiB to the peer (1 MiB writes), wait for its ack. The peer compares
    every byte with the expected pattern; returns the byte count it acknowledged."""
    seed = random.getrandbits(63)
    blocks = pattern(seed)[:BLOCK]
    conn = _Client(env, side)
    write, read_exact = conn.write, conn.read_exact

    def run(n):
        write(header(b"B", n * BLOCK, seed))
        for _ in range(n):
            write(blocks)
        ack = read_exact(ACK_LEN)
        if ack[:1] != b"A" or ack[9:10] != b"\x01":
            raise BenchError(f"{side}: peer reports corrupted bulk data: {ack!r}")
        return int.from_bytes(ack[1:9], "big")

    if run(1) != BLOCK:
        raise BenchError(f"{side}: peer acknowledged a wrong byte count")
    return run


def setup_socket_pingpong(env, side):
    """``run(n)``: n round trips of a 64 B message echoed by the peer. Returns bytes received."""
    msg = os.urandom(PINGPONG_SIZE)
    conn = _Client(env, side)
    write, read_exact = conn.write, conn.read_exact

    def run(n):
        write(header(b"P", n, PINGPONG_SIZE))
        total = 0
        for _ in range(n):
            write(msg)
            echo = read_exact(PINGPONG_SIZE)
            if echo != msg:
                raise BenchError(f"{side}: echo differs from what was sent")
            total += len(echo)
        return total

    run(2)
    return run



ROWS = [
    Row("msg64", "64 B messages", "msgs/s", 1, 64, 1.05,
        lambda env, side: setup_transfer(env, side, 64)),
    Row("rec16k", "16 KiB records", "MB/s", 16384 / 1e6, 16384, 1.05,
        lambda env, side: setup_transfer(env, side, 16384)),
    Row("write1m", "1 MiB writes", "MB/s", BLOCK / 1e6, BLOCK, 1.25,
        lambda env, side: setup_transfer(env, side, BLOCK)),
    Row("handshake", "full handshakes", "pairs/s", 1, 1, 1.1, setup_handshake),
    # Loopback rows depend on wake-up latency across processes: more, shorter runs give a
    # steadier best-of.
    Row("sock_bulk", "socket bulk, 1 MiB writes", "MB/s", BLOCK / 1e6, BLOCK, 1.3,
        setup_socket_bulk, seconds=0.1, repeat=21),
    Row("sock_pingpong", "socket 64 B ping-pong", "round trips/s", 1, PINGPONG_SIZE, 1.15,
        setup_socket_pingpong, seconds=0.1, repeat=21),
]
