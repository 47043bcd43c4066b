"""Hostile peers over loopback sockets with fasttls.helpers (issue 4, section 3): truncation (TCP
EOF mid-handshake, mid-record, without close_notify) and stalls, which must end in the socket's
timeout within STALL_TIMEOUT. The case runner and the rules every case follows:
support.hostile."""
import contextlib
import socket

import pytest

import fasttls
from support.hostile import (
    EOF,
    JOIN_TIMEOUT,
    MAX_STEPS,
    SOCKET_TIMEOUT,
    STALL_TIMEOUT,
    Case,
    Timeout,
    clienthello_bytes,
    f_client,
    f_server,
    params,
    read_until_close,
    run_case,
    serve_with_helpers,
    std_client_ctx,
    std_server_ctx,
)
from support.peers import StdlibPeer, stdlib_socket_handshake


def helpers_client_against(peer_fn, timeout=SOCKET_TIMEOUT, read_size=None):
    """fasttls client with the helpers on one end of a TCP pair, `peer_fn(env, sock)` in a
    thread on the other; handshake then read (until close_notify, or `read_size` bytes)."""

    def scenario(env):
        mine, theirs = env.tcp_pair()
        mine.settimeout(timeout)
        env.thread(peer_fn, env, theirs)
        tls = f_client(env.certs.server)
        fasttls.helpers.init_requestfunc(mine, tls)()
        read = fasttls.helpers.readfunc(mine, tls)
        if read_size is not None:
            env.got(read(read_size))
        read_until_close(env, read)

    return scenario


def helpers_server_against(peer_fn, timeout=SOCKET_TIMEOUT):
    def scenario(env):
        mine, theirs = env.tcp_pair()
        mine.settimeout(timeout)
        env.thread(peer_fn, env, theirs)
        serve_with_helpers(env, f_server(env.certs.server), mine)

    return scenario


def stdlib_server_peer(then):
    """A stdlib server over the socket: handshake, then `then(env, sock, peer)`."""

    def peer_fn(env, sock):
        ctx = std_server_ctx(env, env.certs.server)
        peer = StdlibPeer(ctx, server_side=True)
        stdlib_socket_handshake(sock, peer)
        then(env, sock, peer)

    return peer_fn


def stdlib_client_peer(then):
    """A stdlib client over the socket: handshake, then `then(env, sock, peer)`."""

    def peer_fn(env, sock):
        ctx = std_client_ctx(env, env.certs.server.ca_pem)
        peer = StdlibPeer(ctx, server_side=False, hostname="localhost")
        stdlib_socket_handshake(sock, peer)
        then(env, sock, peer)

    return peer_fn


def half_client_hello_then(action):
    def peer_fn(env, sock):
        hello = clienthello_bytes(env)
        sock.sendall(hello[:len(hello) // 2])
        action(env, sock)

    return peer_fn


def stall(env, sock):
    """Read what comes, send nothing, until the case ends."""
    with contextlib.suppress(OSError):
        sock.recv(65536)
    env.release.wait(JOIN_TIMEOUT)


def half_server_flight_then(action):
    """Answer the ClientHello with the first half of a real stdlib server flight, then act."""

    def peer_fn(env, sock):
        ctx = std_server_ctx(env, env.certs.server)
        peer = StdlibPeer(ctx, server_side=True)
        flight = b""
        for _ in range(MAX_STEPS):  # the ClientHello may arrive in pieces
            if flight:
                break
            data = sock.recv(65536)
            if not data:
                return
            flight = peer.step(data)
        sock.sendall(flight[:len(flight) // 2])
        action(env, sock)

    return peer_fn


def hang_up(env, sock):
    sock.shutdown(socket.SHUT_WR)


def half_record_then(action):
    def then(env, sock, peer):
        data = peer.send(b"0123456789" * 10)
        sock.sendall(data[:len(data) // 2])
        action(env, sock)

    return then


def some_data_then(action):
    def then(env, sock, peer):
        sock.sendall(peer.send(b"12345"))
        action(env, sock)

    return then


def stall_after_hello(env, sock):
    """A client that sends a ClientHello and then nothing."""
    sock.sendall(clienthello_bytes(env))
    stall(env, sock)


CASES = [
    # ---- truncation (the helpers over a socket)
    Case("tcp-eof-mid-handshake", "client", "stdlib",
         helpers_client_against(half_server_flight_then(hang_up)), EOF,
         "connection closed during the handshake"),
    Case("tcp-eof-mid-record", "client", "stdlib",
         helpers_client_against(stdlib_server_peer(half_record_then(hang_up))), EOF,
         "truncated"),
    Case("tcp-eof-mid-client-hello", "server", "raw",
         helpers_server_against(half_client_hello_then(hang_up)), EOF,
         "connection closed during the handshake"),
    Case("tcp-eof-mid-record-to-server", "server", "stdlib",
         helpers_server_against(stdlib_client_peer(half_record_then(hang_up))), EOF,
         "truncated"),
    Case("tcp-eof-without-close-notify", "client", "stdlib",
         helpers_client_against(stdlib_server_peer(some_data_then(hang_up))), EOF,
         "without close_notify", allowed=b"12345"),
    # ---- stalls: the helpers' socket timeout
    Case("stall-before-server-hello", "client", "raw",
         helpers_client_against(stall, timeout=STALL_TIMEOUT), Timeout, "timed out", stall=True),
    Case("stall-before-client-hello", "server", "raw",
         helpers_server_against(stall, timeout=STALL_TIMEOUT), Timeout, "timed out", stall=True),
    Case("stall-after-client-hello", "server", "raw",
         helpers_server_against(stall_after_hello, timeout=STALL_TIMEOUT), Timeout, "timed out",
         stall=True),
    Case("stall-mid-handshake-record", "client", "stdlib",
         helpers_client_against(half_server_flight_then(stall), timeout=STALL_TIMEOUT), Timeout,
         "timed out", stall=True),
    Case("stall-mid-record", "client", "stdlib",
         helpers_client_against(stdlib_server_peer(half_record_then(stall)),
                                timeout=STALL_TIMEOUT), Timeout, "timed out", stall=True),
    Case("stall-mid-record-to-server", "server", "stdlib",
         helpers_server_against(stdlib_client_peer(half_record_then(stall)),
                                timeout=STALL_TIMEOUT), Timeout, "timed out", stall=True),
    Case("stall-mid-exact-read", "client", "stdlib",
         helpers_client_against(stdlib_server_peer(some_data_then(stall)),
                                timeout=STALL_TIMEOUT, read_size=10), Timeout, "timed out",
         stall=True),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_peer(case, hostile_certs, tmp_path):
    run_case(case, hostile_certs, tmp_path)
