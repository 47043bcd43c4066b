"""Hostile peers, renegotiation (issue 4, section 3): renegotiation requests under TLS 1.2 and
1.3 and second ClientHellos, sealed under the real session keys or sent by openssl s_client.
The case runner and the rules every case follows: support.hostile."""
import contextlib
import subprocess

import pytest

import fasttls
from support.hostile import (
    MAX_STEPS,
    PROCESS_TIMEOUT,
    Case,
    Error,
    accept_one,
    clienthello_bytes,
    f_server,
    openssl_output,
    params,
    run_case,
    s_client,
    sealed_session,
)
from support.pairs import TLS12, TLS13
from support.records import (
    ALERT,
    APPLICATION_DATA,
    HANDSHAKE,
    HELLO_REQUEST,
    NO_RENEGOTIATION_WARNING,
    record,
    records,
)


def openssl_client_renegotiates(env):
    """`openssl s_client -tls1_2` sends "hello", then its "R" command renegotiates (a second
    ClientHello under the session keys), then tries to send more."""
    listener = env.listener()
    proc, out = s_client(env, listener.getsockname()[1], "-tls1_2", stdin=subprocess.PIPE)
    sock = accept_one(listener)
    tls = f_server(env.certs.server)
    fasttls.helpers.init_responsefunc(sock, tls)()
    read = fasttls.helpers.readfunc(sock, tls)
    proc.stdin.write(b"hello\n")
    proc.stdin.flush()
    env.got(read(6))
    proc.stdin.write(b"R\n")
    proc.stdin.flush()
    try:
        for _ in range(MAX_STEPS):
            env.got(read())  # ends with the peer's fatal alert, close_notify or EOF
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=PROCESS_TIMEOUT)
        # s_client gave up because fasttls answered its ClientHello with no_renegotiation
        assert "no renegotiation" in openssl_output(out), openssl_output(out)[-2000:]


def second_clienthello_in_handshake(version):
    """A client sends its ClientHello, gets the server's flight, and sends a ClientHello
    again instead of finishing."""

    def scenario(env):
        tls = f_server(env.certs.server)
        # the record layer version a client uses once the server chose TLS 1.2 or 1.3
        hello = b"".join(record(HANDSHAKE, body)
                         for _, _, body in records(clienthello_bytes(env, version)))
        flight = tls.handshake(hello)
        assert flight, "the server did not answer the first ClientHello"
        for _ in range(3):
            tls.handshake(hello)
        raise AssertionError("fasttls server accepted a second ClientHello")

    return scenario


def renegotiation_request(fasttls_role, message):
    """A TLS 1.2 peer asks to renegotiate with a sealed handshake message (a server's
    HelloRequest to a fasttls client; a client's second ClientHello to a fasttls server).
    fasttls must not renegotiate: it answers with a no_renegotiation warning alert, sends no
    handshake message, and keeps the connection (authentic data after it still arrives)."""

    def scenario(env):
        tls, sealer = sealed_session(env, fasttls_role, TLS12, env.certs)
        body = message(env)
        env.got(tls.read(sealer.seal(HANDSHAKE, body)))
        out = tls.write() if tls.pending_output else b""
        replies = sealer.open(out)
        assert all(ctype != HANDSHAKE for ctype, _ in replies), replies  # no renegotiation
        assert (ALERT, NO_RENEGOTIATION_WARNING) in replies, replies
        env.got(tls.read(sealer.seal(APPLICATION_DATA, b"after the refusal")))

    return scenario


def tls13_clienthello_after_handshake(env):
    """TLS 1.3 has no renegotiation: a sealed ClientHello after the handshake is a fatal
    unexpected message."""
    tls, sealer = sealed_session(env, "server", TLS13, env.certs)
    hello = records(clienthello_bytes(env))[0][2]
    env.got(tls.read(sealer.seal(HANDSHAKE, hello)))
    env.got(tls.read(sealer.seal(APPLICATION_DATA, b"after the second ClientHello")))
    raise AssertionError("fasttls accepted a ClientHello after the TLS 1.3 handshake")


def tls13_hellorequest_to_client(env):
    tls, sealer = sealed_session(env, "client", TLS13, env.certs)
    env.got(tls.read(sealer.seal(HANDSHAKE, HELLO_REQUEST)))
    env.got(tls.read(sealer.seal(APPLICATION_DATA, b"after the HelloRequest")))
    raise AssertionError("fasttls accepted a HelloRequest under TLS 1.3")


CASES = [
    # ---- renegotiation and second ClientHellos
    Case("renegotiation-hellorequest-tls12", "client", "raw",
         renegotiation_request("client", lambda env: HELLO_REQUEST), None,
         allowed=b"after the refusal"),
    Case("renegotiation-clienthello-tls12", "server", "raw",
         renegotiation_request("server", lambda env: records(clienthello_bytes(env, TLS12))[0][2]),
         None, allowed=b"after the refusal"),
    Case("renegotiation-openssl-s_client-R", "server", "openssl", openssl_client_renegotiates,
         Error, "handshake failure", allowed=b"hello\n"),
    Case("clienthello-after-tls13-handshake", "server", "raw", tls13_clienthello_after_handshake,
         Error, "unexpected message"),
    Case("hellorequest-after-tls13-handshake", "client", "raw", tls13_hellorequest_to_client,
         Error, "unexpected message"),
    Case("second-clienthello-in-handshake-tls13", "server", "raw",
         second_clienthello_in_handshake(TLS13), Error, "bad record type"),
    Case("second-clienthello-in-handshake-tls12", "server", "raw",
         second_clienthello_in_handshake(TLS12), Error, "unexpected message"),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_peer(case, hostile_certs, tmp_path):
    run_case(case, hostile_certs, tmp_path)
