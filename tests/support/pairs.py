"""Shared plumbing for the tests of the native sans-IO API (``newctx`` / ``newtls``).

Certificates are made at test time with trustme (RSA and ECDSA sets, session-scoped). Peers:
another fasttls endpoint in memory, a stdlib ``ssl.SSLObject`` over ``ssl.MemoryBIO``, or a real
socket. Every loop here is bounded by a count, and every socket has a timeout, so a deadlock or a
lost byte shows up as a failure, never as a hang."""
import datetime
import ssl

import pytest
import trustme

import fasttls

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
VERSIONS = [pytest.param(TLS12, id="TLSv1.2"), pytest.param(TLS13, id="TLSv1.3")]
VERSION_NAME = {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}
KEY_TYPES = {"rsa": trustme.KeyType.RSA, "ecdsa": trustme.KeyType.ECDSA}

SOCKET_TIMEOUT = 10.0  # bounds every blocking socket call
MAX_STEPS = 2000  # bounds every read loop


class Identity:
    """A CA and a leaf certificate it issued, with the PEM/DER forms the tests need."""

    def __init__(self, key_type, *names, not_before=None, not_after=None, ca=None):
        self.key_type = key_type
        self.ca = ca or trustme.CA(key_type=KEY_TYPES[key_type])
        self.leaf = self.ca.issue_cert(
            *names, key_type=KEY_TYPES[key_type], not_before=not_before, not_after=not_after
        )
        self.ca_pem = self.ca.cert_pem.bytes()
        self.key_pem = self.leaf.private_key_pem.bytes()
        self.chain_pem = b"".join(blob.bytes() for blob in self.leaf.cert_chain_pems)
        self.leaf_pem = self.leaf.cert_chain_pems[0].bytes()
        self.leaf_der = ssl.PEM_cert_to_DER_cert(self.leaf_pem.decode("ascii"))

    def write(self, directory):
        """Write ca.pem, cert.pem (chain), key.pem under `directory`; return their paths."""
        paths = {}
        for name, blob in (("ca", self.ca_pem), ("cert", self.chain_pem), ("key", self.key_pem)):
            path = directory / f"{self.key_type}-{name}.pem"
            path.write_bytes(blob)
            paths[name] = path
        return paths

    def stdlib_decoded(self, directory):
        """The stdlib's own decoding of the leaf (what getpeercert() returns in `ssl`)."""
        path = directory / f"{self.key_type}-leaf-decode.pem"
        path.write_bytes(self.leaf_pem)
        return ssl._ssl._test_decode_cert(str(path))

    def subject_ou(self):
        """The organizationalUnitName of the leaf: trustme makes it unique per certificate."""
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(self.leaf_pem)
        return cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value


@pytest.fixture(scope="session")
def identities():
    """One server identity per key type, valid for localhost, 127.0.0.1 and ::1."""
    return {kt: Identity(kt, "localhost", "127.0.0.1", "::1") for kt in KEY_TYPES}


@pytest.fixture(scope="session", params=sorted(KEY_TYPES))
def identity(request, identities):
    return identities[request.param]


@pytest.fixture(scope="session")
def rsa_identity(identities):
    return identities["rsa"]


@pytest.fixture(scope="session")
def client_identity():
    """A client certificate from its own CA (servers that require client certs trust this CA)."""
    return Identity("ecdsa", "client.example")


@pytest.fixture(scope="session")
def stranger_identity():
    """A certificate for localhost from a CA nobody trusts."""
    return Identity("ecdsa", "localhost", "127.0.0.1", "client.example")


@pytest.fixture(scope="session")
def expired_identity():
    return Identity(
        "ecdsa",
        "localhost",
        not_before=datetime.datetime(2019, 1, 1),
        not_after=datetime.datetime(2020, 1, 1),
    )


# ----------------------------------------------------------------------------- fasttls pairs


def client_ctx(identity, **options):
    """A client context trusting `identity`'s CA."""
    return fasttls.newctx(cadata=identity.ca_pem, **options)


def server_ctx(identity, **options):
    """A server context serving `identity`'s chain, from in-memory PEM."""
    ctx = fasttls.newctx(**options)
    ctx.set_cert(identity.chain_pem, identity.key_pem)
    return ctx


def version_options(version):
    return {} if version is None else {"minimum_version": version, "maximum_version": version}


def make_pair(identity, version=None, hostname="localhost", client_options=None,
              server_options=None):
    """A fresh fasttls client and server, not yet handshaken."""
    cctx = client_ctx(identity, **version_options(version), **(client_options or {}))
    sctx = server_ctx(identity, **(server_options or {}))
    return fasttls.newtls("client", cctx, hostname), fasttls.newtls("server", sctx)


def deliver(tls, data):
    """Feed data to tls through handshake() before it finished, read() after. Returns
    (bytes to send back, plaintext)."""
    if not tls.finished():
        return tls.handshake(data), b""
    return b"", tls.read(data)


def handshake_pair(client, server, limit=50):
    """Run an in-memory handshake to completion; returns nothing, fails if it does not end.

    Unlike conftest.pump, it also accepts a server that finishes first (TLS 1.2 session
    resumption), and checks that no plaintext appears during the handshake."""
    to_server = client.handshake()
    for _ in range(limit):
        to_client, plaintext = deliver(server, to_server)
        assert plaintext == b""
        to_server, plaintext = deliver(client, to_client)
        assert plaintext == b""
        if client.finished() and server.finished() and not to_server:
            return
    raise AssertionError(f"handshake did not complete within {limit} round trips")


def connected_pair(identity, version=None, **kwargs):
    client, server = make_pair(identity, version, **kwargs)
    handshake_pair(client, server)
    return client, server


def handshake_error(sender, receiver, limit=50):
    """Run a handshake between sender (the client) and receiver until one side raises; return
    (the exception, the side that raised, the other side). Fails if no side raises."""
    data = sender.handshake()
    ends = [receiver, sender]
    for step in range(2 * limit):
        tls = ends[step % 2]
        try:
            data, _ = deliver(tls, data)
        except fasttls.SSLError as exc:
            return exc, tls, ends[(step + 1) % 2]
        if sender.finished() and receiver.finished() and not data:
            break
    raise AssertionError("the handshake was expected to fail but did not")


# ----------------------------------------------------------------------------- stdlib peer


def stdlib_server_context(identity, version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    identity.leaf.configure_cert(ctx)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def stdlib_client_context(identity, version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    identity.ca.configure_trust(ctx)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


class StdlibPeer:
    """A stdlib ssl.SSLObject over two MemoryBIOs, stepped by hand."""

    def __init__(self, ctx, server_side, hostname=None):
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=hostname
        )
        self.done = False

    def step(self, data=b""):
        """Feed ciphertext, advance the handshake; return the ciphertext to send."""
        if data:
            self.incoming.write(data)
        if not self.done:
            try:
                self.obj.do_handshake()
                self.done = True
            except ssl.SSLWantReadError:
                pass
        return self.outgoing.read()

    def send(self, plaintext):
        self.obj.write(plaintext)
        return self.outgoing.read()

    def receive(self, ciphertext=b""):
        """Feed ciphertext; return all plaintext that is available now."""
        if ciphertext:
            self.incoming.write(ciphertext)
        received = bytearray()
        for _ in range(MAX_STEPS):
            try:
                chunk = self.obj.read(1 << 20)
            except ssl.SSLWantReadError:
                break
            if not chunk:
                break
            received += chunk
        else:
            raise AssertionError("stdlib peer kept producing data")
        return bytes(received)


def handshake_with_stdlib(tls, peer, limit=50):
    """Handshake a fasttls endpoint with a StdlibPeer of the other role."""
    to_peer = tls.handshake() if peer.obj.server_side else b""
    for _ in range(limit):
        to_tls = peer.step(to_peer)
        to_tls_reply, plaintext = deliver(tls, to_tls)
        assert plaintext == b""
        to_peer = to_tls_reply
        if peer.done and tls.finished():
            if to_peer:  # e.g. TLS 1.3 tickets: the stdlib consumes them on its next read
                peer.incoming.write(to_peer)
            return
    raise AssertionError(f"handshake with the stdlib did not complete within {limit} steps")


# ----------------------------------------------------------------------------- socket peer


def socket_handshake(sock, tls, client):
    """Drive tls's handshake over a connected socket (with a timeout)."""
    if client:
        sock.sendall(tls.handshake())
    for _ in range(MAX_STEPS):
        if tls.finished():
            return
        data = sock.recv(65536)
        if not data:
            raise AssertionError("peer closed the TCP connection during the handshake")
        out = tls.handshake(data)
        if out:
            sock.sendall(out)
    raise AssertionError("socket handshake did not complete")


def socket_read_until(sock, tls, predicate):
    """Read plaintext over the socket until predicate(received) is true, the peer sends
    close_notify, or TCP ends. Returns the plaintext received.

    Starts with read() of nothing: records that arrived with the end of the handshake (a peer
    that writes right after its Finished) are already inside tls, not on the socket."""
    received = bytearray(tls.read())
    for _ in range(MAX_STEPS):
        if predicate(bytes(received)) or tls.eof:
            break
        data = sock.recv(65536)
        if not data:
            break
        received += tls.read(data)
        if tls.pending_output:
            sock.sendall(tls.write())
    else:
        raise AssertionError("socket read loop did not end")
    return bytes(received)
