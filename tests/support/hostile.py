"""Hostile and broken peers (issue 4, section 3): one table-driven test.

Every case is a scenario against a peer that nobody here wrote (the stdlib's ``ssl`` over memory
BIOs or loopback sockets, ``openssl s_server``/``s_client``) or raw bytes, some of them sealed
under the real session keys (taken from the stdlib peer's key log) so that fasttls sees records
that are authentic yet hostile: data after close_notify, a renegotiation request, a second
ClientHello. Each case states

* the exact exception class fasttls raises (None: the hostile input is refused without one),
* a substring of its message that names the cause (and, where useful, its ``reason``),
* the only plaintext fasttls may hand out (``allowed``): bytes the real peer authenticated.

The test also checks that nothing hangs: every socket has a timeout, every loop a count limit,
every thread is joined and every process killed when the case ends, and a case must finish
within CASE_DEADLINE. Stall cases run fasttls.helpers over a socket with a short timeout and
expect the socket's timeout exception within it. Sockets are on 127.0.0.1 only.

Certificates are made at test time: trustme for the ordinary ones, ``cryptography`` for the
RSA-1024 and SHA-1-signed ones (fasttls runs at OpenSSL security level 2, which must reject
them; the stdlib peers serving them are put at @SECLEVEL=0)."""
import contextlib
import dataclasses
import datetime
import hmac
import ipaddress
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from typing import Callable, Optional

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.x509.oid import NameOID

import fasttls
from conftest import require_program
from native_support import StdlibPeer, deliver

TLS10 = ssl.TLSVersion.TLSv1
TLS11 = ssl.TLSVersion.TLSv1_1
TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3

SOCKET_TIMEOUT = 10.0  # any socket that is not meant to stall
STALL_TIMEOUT = 0.5  # fasttls's socket in the stall cases
CASE_DEADLINE = 20.0  # a case taking longer than this counts as a hang
JOIN_TIMEOUT = 15.0
PROCESS_TIMEOUT = 15.0
MAX_STEPS = 200  # bounds every loop
WEAK = "DEFAULT:@SECLEVEL=0"  # the stdlib/openssl peers that must be able to use weak things
AES128_GCM_TLS12 = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"

# TLS wire constants
CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23
CLOSE_NOTIFY = b"\x01\x00"
HELLO_REQUEST = b"\x00\x00\x00\x00"
NO_RENEGOTIATION_WARNING = b"\x01\x64"


# =============================================================================== certificates


def _name(text):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fasttls hostile tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Cert:
    """A leaf (chain PEM, key PEM) and the PEM of the CA that a verifier should trust."""

    def __init__(self, name, chain_pem, key_pem, ca_pem):
        self.name, self.chain_pem, self.key_pem, self.ca_pem = name, chain_pem, key_pem, ca_pem
        self.paths = None

    @classmethod
    def from_trustme(cls, name, ca, leaf, send_chain=True):
        pems = leaf.cert_chain_pems if send_chain else leaf.cert_chain_pems[:1]
        return cls(name, b"".join(p.bytes() for p in pems), leaf.private_key_pem.bytes(),
                   ca.cert_pem.bytes())

    def write(self, directory):
        """Write cert/key files (for the stdlib and openssl peers) once; return their paths."""
        if self.paths is None:
            cert, key = directory / f"{self.name}-cert.pem", directory / f"{self.name}-key.pem"
            cert.write_bytes(self.chain_pem)
            key.write_bytes(self.key_pem)
            self.paths = (str(cert), str(key))
        return self.paths


SHA256_WITH_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
SHA1_WITH_RSA = bytes.fromhex("300d06092a864886f70d0101050500")


def _der(tag, body):
    n = len(body)
    size = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + size + body


def _resign_sha1(cert, ca_key):
    """The same certificate signed with SHA-1 (cryptography no longer signs certificates with
    SHA-1, so the algorithm identifier in the TBS part is swapped and the TBS signed by hand)."""
    tbs = cert.tbs_certificate_bytes
    assert tbs.count(SHA256_WITH_RSA) == 1
    tbs = tbs.replace(SHA256_WITH_RSA, SHA1_WITH_RSA)
    signature = ca_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    der = _der(0x30, tbs + SHA1_WITH_RSA + _der(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


def crafted_cert(name, names, key_bits=2048, ca_bits=2048, sha1=False, self_signed=False):
    """A CA and a leaf made with `cryptography`, to get what trustme will not make: small RSA
    keys, SHA-1 signatures, a self-signed leaf."""
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    if self_signed:
        ca_key, ca_subject = leaf_key, _name(name)
    else:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=ca_bits)
        ca_subject = _name(f"{name} CA")
        ca_cert = (
            x509.CertificateBuilder().subject_name(ca_subject).issuer_name(ca_subject)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
    sans = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n)
            for n in names]
    leaf = (
        x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_subject)
        .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    if sha1:
        leaf = _resign_sha1(leaf, ca_key)
    ca_pem = _pem(leaf) if self_signed else _pem(ca_cert)
    return Cert(name, _pem(leaf), _key_pem(leaf_key), ca_pem)


class Certs:
    """Every certificate the cases use, made once per session."""

    def __init__(self):
        ecdsa, rsa_type = trustme.KeyType.ECDSA, trustme.KeyType.RSA
        server_ca = trustme.CA(key_type=ecdsa)
        client_ca = trustme.CA(key_type=ecdsa)
        stranger_ca = trustme.CA(key_type=ecdsa)
        rsa_ca = trustme.CA(key_type=rsa_type)
        names = ("localhost", "127.0.0.1")
        past = (datetime.datetime(2019, 1, 1), datetime.datetime(2020, 1, 1))
        future = (datetime.datetime(2090, 1, 1), datetime.datetime(2091, 1, 1))

        def leaf(name, ca, *idents, when=(None, None), key_type=ecdsa, chain=True):
            issued = ca.issue_cert(*idents, not_before=when[0], not_after=when[1],
                                   key_type=key_type)
            return Cert.from_trustme(name, ca, issued, send_chain=chain)

        self.server = leaf("server", server_ca, *names)
        self.server_rsa = leaf("server-rsa", rsa_ca, *names, key_type=rsa_type)
        self.expired = leaf("expired", server_ca, *names, when=past)
        self.not_yet_valid = leaf("not-yet-valid", server_ca, *names, when=future)
        self.untrusted = leaf("untrusted", stranger_ca, *names)
        self.other_host = leaf("other-host", server_ca, "other.example", "10.1.2.3")
        self.self_signed = crafted_cert("self-signed", names, self_signed=True)
        self.rsa1024 = crafted_cert("rsa1024", names, key_bits=1024)
        self.rsa1024_ca = crafted_cert("rsa1024-ca", names, ca_bits=1024)
        self.sha1 = crafted_cert("sha1", names, sha1=True)
        intermediate = server_ca.create_child_ca(key_type=ecdsa)
        self.leaf_only = Cert.from_trustme(
            "leaf-only", server_ca, intermediate.issue_cert(*names, key_type=ecdsa), False)
        self.client = leaf("client", client_ca, "client.example")
        self.client_stranger = leaf("client-stranger", stranger_ca, "client.example")
        self.client_expired = leaf("client-expired", client_ca, "client.example", when=past)
        self.client_self_signed = crafted_cert("client-self-signed", ["client.example"],
                                               self_signed=True)
        self.client_rsa1024 = crafted_cert("client-rsa1024", ["client.example"], key_bits=1024)
        self.client_sha1 = crafted_cert("client-sha1", ["client.example"], sha1=True)
        self.client_ca_pem = client_ca.cert_pem.bytes()


@pytest.fixture(scope="session")
def certs():
    return Certs()


# ============================================================================== fasttls ends


def f_client(trust, hostname="localhost", **options):
    """A fasttls client trusting `trust` (a Cert's CA, or PEM bytes)."""
    cadata = trust.ca_pem if isinstance(trust, Cert) else trust
    return fasttls.newtls("client", fasttls.newctx(cadata=cadata, **options), hostname)


def f_server(cert, client_ca=None, **options):
    """A fasttls server with `cert`; with client_ca, it requires a client certificate."""
    ctx = fasttls.newctx(**options)
    ctx.set_cert(cert.chain_pem, cert.key_pem)
    if client_ca is not None:
        ctx.load_verify_locations(cadata=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return fasttls.newtls("server", ctx)


# ================================================================================ stdlib peers


def std_server_ctx(env, cert, version=None, ciphers=None, weak=False, tickets=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if weak:
        ctx.set_ciphers(WEAK)
        ctx.minimum_version = TLS10 if version is None else version
    if ciphers:
        ctx.set_ciphers(ciphers)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    ctx.load_cert_chain(*cert.write(env.dir))
    if not tickets:
        ctx.num_tickets = 0
    ctx.keylog_filename = env.keylog
    return ctx


def std_client_ctx(env, trust_pem, cert=None, version=None, ciphers=None, weak=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=trust_pem.decode("ascii"))
    if weak:
        ctx.set_ciphers(WEAK)
        ctx.minimum_version = TLS10 if version is None else version
    if ciphers:
        ctx.set_ciphers(ciphers)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if cert is not None:
        ctx.load_cert_chain(*cert.write(env.dir))
    ctx.keylog_filename = env.keylog
    return ctx


def memory_handshake(env, tls, peer):
    """Handshake fasttls `tls` with a StdlibPeer of the other role, in memory, until both finish
    or fasttls raises (it is then given the peer's alert first, if the peer failed). Plaintext
    fasttls returns goes to env.received. Returns the peer's own error, if any."""
    to_peer = b"" if tls.server_side else tls.handshake()
    peer_error = None
    for _ in range(MAX_STEPS):
        to_tls = b""
        if peer_error is None:
            try:
                to_tls = peer.step(to_peer)
            except ssl.SSLError as exc:  # the stdlib refused: its alert is in the BIO
                peer_error = exc
                to_tls = peer.outgoing.read()
        to_peer, plain = deliver(tls, to_tls)  # raises what fasttls raises
        env.got(plain)
        if tls.finished() and peer.done:
            if to_peer:
                peer.incoming.write(to_peer)  # e.g. tickets: the stdlib reads them later
            return peer_error
        if peer_error is not None:
            return peer_error  # fasttls took the peer's alert without raising
    raise AssertionError("memory handshake did not end")


def std_socket_handshake(sock, peer):
    """Drive a StdlibPeer's handshake over a socket (run in a peer thread)."""
    if not peer.obj.server_side:
        sock.sendall(peer.step())
    for _ in range(MAX_STEPS):
        if peer.done:
            return
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("fasttls closed the connection during the handshake")
        out = peer.step(data)
        if out:
            sock.sendall(out)
    raise AssertionError("stdlib socket handshake did not end")


# ===================================================================== records under real keys


def records(data):
    """Split bytes into (content type, version, body) records; a partial tail is an error."""
    out, i = [], 0
    while i < len(data):
        assert i + 5 <= len(data), "partial record header"
        length = int.from_bytes(data[i + 3:i + 5], "big")
        assert i + 5 + length <= len(data), "partial record"
        out.append((data[i], data[i + 1:i + 3], data[i + 5:i + 5 + length]))
        i += 5 + length
    return out


def record(ctype, body, version=b"\x03\x03"):
    return bytes([ctype]) + version + len(body).to_bytes(2, "big") + body


def read_keylog(path):
    lines = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                lines[parts[0]] = (bytes.fromhex(parts[1]), bytes.fromhex(parts[2]))
    return lines


def hkdf_expand_label(secret, label, length):
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


def p_sha256(secret, seed, length):
    out, a = b"", seed
    while len(out) < length:
        a = hmac.new(secret, a, "sha256").digest()
        out += hmac.new(secret, a + seed, "sha256").digest()
    return out[:length]


class Sealer:
    """Seal and open records as one side of a live connection (AES-128-GCM-SHA256 only),
    with that side's keys derived from the stdlib peer's key log: a raw peer that can speak
    authentically after the handshake, which the stdlib will not do (data after close_notify,
    HelloRequest, a second ClientHello)."""

    def __init__(self, version, keylog, side, server_random=None, seq=0):
        self.version, self.seq, self.peer_seq = version, seq, seq
        keys = read_keylog(keylog)
        if version == TLS13:
            own = keys["CLIENT_TRAFFIC_SECRET_0" if side == "client" else
                       "SERVER_TRAFFIC_SECRET_0"][1]
            other = keys["SERVER_TRAFFIC_SECRET_0" if side == "client" else
                         "CLIENT_TRAFFIC_SECRET_0"][1]
            self.key = hkdf_expand_label(own, b"key", 16)
            self.iv = hkdf_expand_label(own, b"iv", 12)
            self.peer_key = hkdf_expand_label(other, b"key", 16)
            self.peer_iv = hkdf_expand_label(other, b"iv", 12)
        else:
            client_random, master = keys["CLIENT_RANDOM"]
            block = p_sha256(master, b"key expansion" + server_random + client_random, 40)
            keys = {"client": (block[0:16], block[32:36]), "server": (block[16:32], block[36:40])}
            other = "server" if side == "client" else "client"
            (self.key, self.iv), (self.peer_key, self.peer_iv) = keys[side], keys[other]

    def seal(self, ctype, body):
        seq, self.seq = self.seq, self.seq + 1
        if self.version == TLS13:
            nonce = bytes(a ^ b for a, b in zip(self.iv, seq.to_bytes(12, "big")))
            inner = body + bytes([ctype])
            header = bytes([APPLICATION_DATA]) + b"\x03\x03" + (len(inner) + 16).to_bytes(2, "big")
            return header + AESGCM(self.key).encrypt(nonce, inner, header)
        explicit = seq.to_bytes(8, "big")
        aad = explicit + bytes([ctype]) + b"\x03\x03" + len(body).to_bytes(2, "big")
        return record(ctype, explicit + AESGCM(self.key).encrypt(self.iv + explicit, body, aad))

    def open(self, data):
        """Decrypt every record the fasttls side sent: [(content type, body)]."""
        out = []
        for ctype, _, body in records(data):
            seq, self.peer_seq = self.peer_seq, self.peer_seq + 1
            if self.version == TLS13:
                nonce = bytes(a ^ b for a, b in zip(self.peer_iv, seq.to_bytes(12, "big")))
                header = bytes([ctype]) + b"\x03\x03" + len(body).to_bytes(2, "big")
                inner = AESGCM(self.peer_key).decrypt(nonce, body, header).rstrip(b"\x00")
                out.append((inner[-1], inner[:-1]))
            else:
                explicit, sealed = body[:8], body[8:]
                aad = seq.to_bytes(8, "big") + bytes([ctype]) + b"\x03\x03" + (
                    len(sealed) - 16).to_bytes(2, "big")
                out.append((ctype, AESGCM(self.peer_key).decrypt(self.peer_iv + explicit,
                                                                  sealed, aad)))
        return out


def sealed_session(env, fasttls_role, version, certs):
    """A finished in-memory handshake between fasttls (`fasttls_role`) and a stdlib peer that
    will never write itself; returns (fasttls TLS, Sealer speaking as the stdlib side)."""
    suites = {"ciphersuites": "TLS_AES_128_GCM_SHA256"} if version == TLS13 else {}
    if fasttls_role == "client":
        tls = f_client(certs.server, **suites)
        ctx = std_server_ctx(env, certs.server, version, ciphers=AES128_GCM_TLS12, tickets=False)
        peer = StdlibPeer(ctx, server_side=True)
    else:
        tls = f_server(certs.server, **suites)
        ctx = std_client_ctx(env, certs.server.ca_pem, version=version, ciphers=AES128_GCM_TLS12)
        peer = StdlibPeer(ctx, server_side=False, hostname="localhost")
    server_random = None
    if version == TLS12:  # from the ServerHello, which the stdlib or fasttls sends first
        hello = []
        original_step = peer.step

        def step(data=b""):
            out = original_step(data)
            hello.append(data if fasttls_role == "server" else out)
            return out

        peer.step = step
    assert memory_handshake(env, tls, peer) is None
    assert tls.cipher()[0] in ("TLS_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256")
    if version == TLS12:
        first = next(h for h in hello if h and h[0] == HANDSHAKE and h[5] == 2)
        server_random = first[11:43]
    # TLS 1.2: the peer's Finished was record 0 under these keys; TLS 1.3: nothing sent yet.
    seq = 1 if version == TLS12 else 0
    return tls, Sealer(version, env.keylog, "server" if fasttls_role == "client" else "client",
                       server_random, seq)


# ================================================================================ case runner


class Env:
    """What a case may use; everything it starts is stopped by close()."""

    def __init__(self, directory, certs):
        self.dir, self.certs = directory, certs
        self.keylog = str(directory / "keylog.txt")
        self.received = bytearray()
        self.threads, self.sockets, self.processes = [], [], []
        self.release = threading.Event()  # stalling peers wait on this

    def got(self, plain):
        self.received += plain

    def thread(self, fn, *args):
        t = PeerThread(fn, *args)
        self.threads.append(t)
        return t

    def tcp_pair(self):
        """(fasttls end, peer end): connected loopback sockets, both with SOCKET_TIMEOUT."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lsock:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(1)
            lsock.settimeout(SOCKET_TIMEOUT)
            a = socket.create_connection(lsock.getsockname(), timeout=SOCKET_TIMEOUT)
            b, _ = lsock.accept()
        b.settimeout(SOCKET_TIMEOUT)
        self.sockets += [a, b]
        return a, b

    def connect(self, port):
        sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
        self.sockets.append(sock)
        return sock

    def listener(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sockets.append(sock)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        sock.settimeout(SOCKET_TIMEOUT)
        return sock

    def process(self, args, stdin=subprocess.DEVNULL):
        out = open(self.dir / f"proc{len(self.processes)}.out", "wb+")
        proc = subprocess.Popen(args, stdin=stdin, stdout=out, stderr=subprocess.STDOUT)
        self.processes.append((proc, out))
        return proc, out

    def close(self):
        self.release.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for proc, out in self.processes:
            proc.kill()
            proc.wait(timeout=PROCESS_TIMEOUT)
            out.close()
            if proc.stdin:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        hung = []
        for t in self.threads:
            t.join(JOIN_TIMEOUT)
            if t.is_alive():
                hung.append(t)
        assert not hung, "a peer thread did not finish (hang)"


class PeerThread(threading.Thread):
    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.error = fn, args, None
        self.start()

    def run(self):
        try:
            self.fn(*self.args)
        except BaseException as exc:  # peers fail on purpose in many cases
            self.error = exc


# -------------------------------------------------------------------------- openssl peers


def openssl_output(out):
    out.flush()
    out.seek(0)
    return out.read().decode("utf-8", "replace")


def s_server(env, cert, *extra):
    """`openssl s_server` on 127.0.0.1 (one connection); returns its port."""
    openssl = require_program("openssl")
    cert_path, key_path = cert.write(env.dir)
    proc, out = env.process([openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1",
                             "-cert", cert_path, "-key", key_path, *extra],
                            stdin=subprocess.PIPE)  # open until the case ends: EOF would stop it
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline:
        match = re.search(r"ACCEPT 127\.0\.0\.1:(\d+)\s", openssl_output(out))
        if match:
            return int(match.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError("s_server did not start: " + openssl_output(out))


def s_client(env, port, *extra, stdin=subprocess.DEVNULL):
    openssl = require_program("openssl")
    return env.process([openssl, "s_client", "-connect", f"127.0.0.1:{port}", *extra],
                       stdin=stdin)


def serve_with_helpers(env, tls, sock):
    """The fasttls server side over a socket with the helpers: handshake, then read until
    close_notify (plaintext to env.received)."""
    fasttls.helpers.init_responsefunc(sock, tls)()
    read = fasttls.helpers.readfunc(sock, tls)
    for _ in range(MAX_STEPS):
        data = read()
        env.got(data)
        if not data:
            return


def accept_one(listener):
    sock, _ = listener.accept()
    sock.settimeout(SOCKET_TIMEOUT)
    return sock


# ================================================================================== scenarios
# Each takes the Env, raises what fasttls raises (or returns), and puts every plaintext byte
# fasttls returned into env.received.


def client_vs_stdlib(cert_name, hostname="localhost", trust=None, **server_kw):
    """fasttls client against a stdlib server presenting certs.<cert_name>."""

    def scenario(env):
        cert = getattr(env.certs, cert_name)
        tls = f_client(trust(env.certs) if trust else cert, hostname)
        ctx = std_server_ctx(env, cert, **server_kw)
        error = memory_handshake(env, tls, StdlibPeer(ctx, server_side=True))
        raise AssertionError(f"fasttls accepted the handshake (peer error: {error!r})")

    return scenario


def server_vs_stdlib(client_cert_name=None, version=None, **client_kw):
    """fasttls server requiring a client certificate (from certs.client's CA) against a stdlib
    client presenting certs.<client_cert_name> (or none)."""

    def scenario(env):
        certs = env.certs
        cert = getattr(certs, client_cert_name) if client_cert_name else None
        trusted = certs.client_ca_pem
        if cert is not None and cert.name in ("client-rsa1024", "client-sha1"):
            trusted = cert.ca_pem  # its CA is trusted: only the key or the signature is at fault
        tls = f_server(certs.server, client_ca=trusted)
        ctx = std_client_ctx(env, certs.server.ca_pem, cert, version, **client_kw)
        error = memory_handshake(env, tls, StdlibPeer(ctx, server_side=False,
                                                      hostname="localhost"))
        raise AssertionError(f"fasttls accepted the handshake (peer error: {error!r})")

    return scenario


def stdlib_client_rejects_fasttls(env):
    """The stdlib client does not trust fasttls's certificate and aborts with an alert."""
    tls = f_server(env.certs.untrusted)
    ctx = std_client_ctx(env, env.certs.server.ca_pem)
    peer_error = memory_handshake(env, tls, StdlibPeer(ctx, server_side=False,
                                                       hostname="localhost"))
    raise AssertionError(f"fasttls did not fail (stdlib: {peer_error!r})")


def old_version_server(version):
    def scenario(env):
        tls = f_client(env.certs.server_rsa)
        ctx = std_server_ctx(env, env.certs.server_rsa, version, weak=True)
        memory_handshake(env, tls, StdlibPeer(ctx, server_side=True))
        raise AssertionError(f"fasttls accepted {tls.version()}")

    return scenario


def old_version_client(version):
    def scenario(env):
        tls = f_server(env.certs.server_rsa)
        ctx = std_client_ctx(env, env.certs.server_rsa.ca_pem, version=version, weak=True)
        memory_handshake(env, tls, StdlibPeer(ctx, server_side=False, hostname="localhost"))
        raise AssertionError(f"fasttls accepted {tls.version()}")

    return scenario


def openssl_old_version_server(env):
    """`openssl s_server -tls1` (TLS 1.0 only) against a fasttls client using the helpers."""
    port = s_server(env, env.certs.server_rsa, "-tls1", "-cipher", WEAK)
    sock = env.connect(port)
    tls = f_client(env.certs.server_rsa)
    fasttls.helpers.init_requestfunc(sock, tls)()
    raise AssertionError(f"fasttls accepted {tls.version()}")


def openssl_old_version_client(env):
    """`openssl s_client -tls1` against a fasttls server using the helpers."""
    listener = env.listener()
    s_client(env, listener.getsockname()[1], "-tls1", "-cipher", WEAK)
    sock = accept_one(listener)
    serve_with_helpers(env, f_server(env.certs.server_rsa), sock)


def openssl_expired_server(env):
    """`openssl s_server` presenting an expired certificate; the fasttls client (helpers)."""
    port = s_server(env, env.certs.expired)
    sock = env.connect(port)
    fasttls.helpers.init_requestfunc(sock, f_client(env.certs.expired))()


def openssl_client_without_cert(env):
    """`openssl s_client` without a certificate against a fasttls server that requires one."""
    listener = env.listener()
    s_client(env, listener.getsockname()[1], stdin=subprocess.PIPE)
    sock = accept_one(listener)
    serve_with_helpers(env, f_server(env.certs.server, client_ca=env.certs.client_ca_pem), sock)


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


def clienthello_bytes(env, version=None):
    """A real ClientHello from the stdlib (one TLS record, or more)."""
    ctx = std_client_ctx(env, env.certs.server.ca_pem, version=version)
    return StdlibPeer(ctx, server_side=False, hostname="localhost").step()


def raw_to_server(payload, then=b""):
    """Raw bytes (or a function of env giving them) as the first flight to a fasttls server,
    and `then` after its answer."""

    def scenario(env):
        data = payload(env) if callable(payload) else payload
        tls = f_server(env.certs.server)
        tls.handshake(data)
        for _ in range(MAX_STEPS):
            tls.handshake(then)
        raise AssertionError("fasttls server accepted the input")

    return scenario


def raw_to_client(reply):
    """A fasttls client whose ClientHello is answered with raw bytes."""

    def scenario(env):
        tls = f_client(env.certs.server)
        hello = tls.handshake()
        assert hello[0] == HANDSHAKE
        data = reply(env, hello) if callable(reply) else reply
        tls.handshake(data)
        tls.handshake(b"")
        raise AssertionError("fasttls client accepted the input")

    return scenario


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


def tampered_record(fasttls_role, version):
    """A real application-data record from the stdlib peer with one ciphertext byte flipped."""

    def scenario(env):
        tls, sealer = sealed_session(env, fasttls_role, version, env.certs)
        good = sealer.seal(APPLICATION_DATA, b"authentic")
        env.got(tls.read(good))
        bad = bytearray(sealer.seal(APPLICATION_DATA, b"forged payload"))
        bad[-20] ^= 0x01
        env.got(tls.read(bytes(bad)))
        env.got(tls.read(b""))
        raise AssertionError("fasttls accepted a tampered record")

    return scenario


def oversized_record(fasttls_role, version, length):
    """A record header announcing `length` bytes of ciphertext (the limit is 2^14+256 for TLS
    1.3, 2^14+2048 for 1.2), and that many bytes, after a finished handshake."""

    def scenario(env):
        tls, sealer = sealed_session(env, fasttls_role, version, env.certs)
        env.got(tls.read(sealer.seal(APPLICATION_DATA, b"authentic")))
        env.got(tls.read(record(APPLICATION_DATA, os.urandom(length))))
        raise AssertionError("fasttls accepted an oversized record")

    return scenario


def record_after_close_notify(fasttls_role, version, together):
    """The peer sends data, close_notify, then a perfectly authentic record after it (sealed
    with the next sequence number). fasttls must stop at close_notify."""

    def scenario(env):
        tls, sealer = sealed_session(env, fasttls_role, version, env.certs)
        flights = [sealer.seal(APPLICATION_DATA, b"before close"),
                   sealer.seal(ALERT, CLOSE_NOTIFY),
                   sealer.seal(APPLICATION_DATA, b"INJECTED after close_notify")]
        if together:
            flights = [b"".join(flights)]
        for data in flights:
            env.got(tls.read(data))
        for _ in range(3):
            env.got(tls.read(b""))
        assert tls.eof, "close_notify was not noticed"
        env.got(tls.read(sealer.seal(APPLICATION_DATA, b"INJECTED again")))

    return scenario


def garbage_after_close_notify(env):
    """A stdlib peer sends data and close_notify (real ones), then junk follows."""
    tls, sealer = sealed_session(env, "client", TLS13, env.certs)
    env.got(tls.read(sealer.seal(APPLICATION_DATA, b"before close")))
    env.got(tls.read(sealer.seal(ALERT, CLOSE_NOTIFY) + b"\x17\x03\x03\x00\x05junk!"))
    assert tls.eof
    env.got(tls.read(b"GET / HTTP/1.0\r\n\r\n"))


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


# ------------------------------------------------------------ socket cases with the helpers


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
        for _ in range(MAX_STEPS):
            data = read()
            env.got(data)
            if not data:
                return

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
        std_socket_handshake(sock, peer)
        then(env, sock, peer)

    return peer_fn


def stdlib_client_peer(then):
    """A stdlib client over the socket: handshake, then `then(env, sock, peer)`."""

    def peer_fn(env, sock):
        ctx = std_client_ctx(env, env.certs.server.ca_pem)
        peer = StdlibPeer(ctx, server_side=False, hostname="localhost")
        std_socket_handshake(sock, peer)
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


# ======================================================================================= table


@dataclasses.dataclass
class Case:
    id: str
    role: str  # fasttls's role
    peer: str  # stdlib, raw, openssl
    scenario: Callable[[Env], None]
    raises: Optional[type]  # the exact class fasttls raises; None: refused without exception
    message: Optional[str] = None  # in str(exception)
    reason: Optional[str] = None  # exception.reason
    verify: Optional[str] = None  # in exception.verify_message
    allowed: bytes = b""  # the only plaintext fasttls may return
    stall: bool = False


CertError = fasttls.SSLCertVerificationError
Error = fasttls.SSLError
EOF = fasttls.SSLEOFError
Timeout = socket.timeout  # TimeoutError on Python >= 3.10

CASES = [
    # ---- the server's certificate (fasttls client, stdlib server)
    Case("expired-server-cert", "client", "stdlib", client_vs_stdlib("expired"), CertError,
         "certificate has expired", verify="certificate has expired"),
    Case("not-yet-valid-server-cert", "client", "stdlib", client_vs_stdlib("not_yet_valid"),
         CertError, "certificate is not yet valid"),
    Case("self-signed-server-cert", "client", "stdlib",
         client_vs_stdlib("self_signed", trust=lambda c: c.server), CertError,
         "self-signed certificate"),
    Case("untrusted-server-ca", "client", "stdlib",
         client_vs_stdlib("untrusted", trust=lambda c: c.server), CertError,
         "unable to get local issuer certificate"),
    Case("wrong-hostname", "client", "stdlib",
         client_vs_stdlib("other_host", "localhost"), CertError,
         "Hostname mismatch, certificate is not valid for 'localhost'"),
    Case("wrong-ip-address", "client", "stdlib",
         client_vs_stdlib("other_host", "127.0.0.1"), CertError,
         "IP address mismatch, certificate is not valid for '127.0.0.1'"),
    Case("rsa1024-server-key", "client", "stdlib", client_vs_stdlib("rsa1024", weak=True),
         CertError, "EE certificate key too weak"),
    Case("rsa1024-server-ca", "client", "stdlib", client_vs_stdlib("rsa1024_ca", weak=True),
         CertError, "CA certificate key too weak"),
    Case("sha1-signed-server-cert", "client", "stdlib", client_vs_stdlib("sha1", weak=True),
         CertError, "digest algorithm too weak"),
    Case("missing-intermediate", "client", "stdlib", client_vs_stdlib("leaf_only"), CertError,
         "unable to get local issuer certificate"),
    Case("expired-server-cert-openssl", "client", "openssl", openssl_expired_server, CertError,
         "certificate has expired"),
    # ---- client certificates (fasttls server requiring one, stdlib client)
    Case("client-cert-absent-tls13", "server", "stdlib", server_vs_stdlib(None, TLS13), Error,
         "peer did not return a certificate", reason="PEER_DID_NOT_RETURN_A_CERTIFICATE"),
    Case("client-cert-absent-tls12", "server", "stdlib", server_vs_stdlib(None, TLS12), Error,
         "peer did not return a certificate", reason="PEER_DID_NOT_RETURN_A_CERTIFICATE"),
    Case("client-cert-untrusted", "server", "stdlib", server_vs_stdlib("client_stranger"),
         CertError, "unable to get local issuer certificate"),
    Case("client-cert-expired", "server", "stdlib", server_vs_stdlib("client_expired"),
         CertError, "certificate has expired"),
    Case("client-cert-self-signed", "server", "stdlib",
         server_vs_stdlib("client_self_signed"), CertError, "self-signed certificate"),
    Case("client-cert-rsa1024", "server", "stdlib",
         server_vs_stdlib("client_rsa1024", weak=True), CertError, "EE certificate key too weak"),
    Case("client-cert-sha1", "server", "stdlib", server_vs_stdlib("client_sha1", weak=True),
         CertError, "digest algorithm too weak"),
    Case("client-cert-absent-openssl", "server", "openssl", openssl_client_without_cert, Error,
         "peer did not return a certificate"),
    Case("stdlib-client-rejects-server-cert", "server", "stdlib",
         stdlib_client_rejects_fasttls, Error, "alert unknown ca",
         reason="TLSV1_ALERT_UNKNOWN_CA"),
    # ---- old protocol versions
    Case("tls10-only-server", "client", "stdlib", old_version_server(TLS10), Error,
         "protocol version"),
    Case("tls11-only-server", "client", "stdlib", old_version_server(TLS11), Error,
         "protocol version"),
    Case("tls10-only-client", "server", "stdlib", old_version_client(TLS10), Error,
         "unsupported protocol", reason="UNSUPPORTED_PROTOCOL"),
    Case("tls11-only-client", "server", "stdlib", old_version_client(TLS11), Error,
         "unsupported protocol", reason="UNSUPPORTED_PROTOCOL"),
    Case("tls10-only-server-openssl", "client", "openssl", openssl_old_version_server, Error,
         "protocol version"),
    Case("tls10-only-client-openssl", "server", "openssl", openssl_old_version_client, Error,
         "unsupported protocol"),
    # ---- garbage and malformed records
    Case("http-request-to-server", "server", "raw",
         raw_to_server(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"), Error, "http request",
         reason="HTTP_REQUEST"),
    Case("garbage-to-server", "server", "raw", raw_to_server(b"\x00\x01garbage" * 64), Error,
         "wrong version number"),
    Case("garbage-reply-to-client", "client", "raw", raw_to_client(b"\xffgarbage" * 64), Error,
         "wrong version number"),
    Case("tampered-record-to-client-tls13", "client", "raw", tampered_record("client", TLS13),
         Error, "bad record mac", allowed=b"authentic"),
    Case("tampered-record-to-server-tls12", "server", "raw", tampered_record("server", TLS12),
         Error, "bad record mac", allowed=b"authentic"),
    Case("oversized-handshake-record", "server", "raw",
         raw_to_server(record(HANDSHAKE, b"\x01" + b"\x00" * (2 ** 14 + 256))), Error,
         "length too long"),
    Case("oversized-record-to-client-tls13", "client", "raw",
         oversized_record("client", TLS13, 2 ** 14 + 256 + 1), Error, "length too long",
         allowed=b"authentic"),
    Case("oversized-record-to-server-tls12", "server", "raw",
         oversized_record("server", TLS12, 2 ** 14 + 2048 + 1), Error, "length too long",
         allowed=b"authentic"),
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
    # ---- close_notify is the end
    Case("record-after-close-notify-tls13-client", "client", "raw",
         record_after_close_notify("client", TLS13, together=False), None,
         allowed=b"before close"),
    Case("record-after-close-notify-tls13-server", "server", "raw",
         record_after_close_notify("server", TLS13, together=True), None,
         allowed=b"before close"),
    Case("record-after-close-notify-tls12-server", "server", "raw",
         record_after_close_notify("server", TLS12, together=True), None,
         allowed=b"before close"),
    Case("garbage-after-close-notify", "client", "raw", garbage_after_close_notify, None,
         allowed=b"before close"),
    # ---- alerts in the handshake
    Case("fatal-alert-instead-of-server-hello", "client", "raw",
         raw_to_client(record(ALERT, b"\x02\x28")), Error, "alert handshake failure",
         reason="SSLV3_ALERT_HANDSHAKE_FAILURE"),
    Case("fatal-alert-instead-of-client-hello", "server", "raw",
         raw_to_server(record(ALERT, b"\x02\x50", b"\x03\x01")), Error, "unexpected message",
         reason="UNEXPECTED_MESSAGE"),
    Case("fatal-alert-after-server-flight-tls12", "server", "raw",
         raw_to_server(lambda env: clienthello_bytes(env, TLS12), then=record(ALERT, b"\x02\x2a")),
         Error, "alert bad certificate", reason="SSLV3_ALERT_BAD_CERTIFICATE"),
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


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_hostile_peer(case, certs, tmp_path):
    env = Env(tmp_path, certs)
    start = time.monotonic()
    # The scenario runs in a watchdog thread: a hang (even inside the C engine, which runs
    # without the GIL) fails the case instead of blocking the test run.
    runner = PeerThread(case.scenario, env)
    runner.join(CASE_DEADLINE)
    elapsed = time.monotonic() - start
    hung = runner.is_alive()
    env.close()  # joins every peer thread, kills every process
    runner.join(JOIN_TIMEOUT)
    assert not hung, f"the case did not finish within {CASE_DEADLINE} s (hang)"
    error = runner.error
    print(f"\n{case.id}: {type(error).__name__ if error else None}: {error}")
    if isinstance(error, (pytest.skip.Exception, pytest.fail.Exception, AssertionError)):
        raise error  # a missing peer program, or the scenario's own check failed
    if case.raises is None:
        assert error is None, f"expected no exception, got {error!r}"
    else:
        assert error is not None, f"expected {case.raises.__name__}, nothing was raised"
        assert type(error) is case.raises, f"expected {case.raises.__name__}, got {error!r}"
        assert case.message in str(error), f"{case.message!r} not in {str(error)!r}"
        if case.reason is not None:
            assert error.reason == case.reason, error.reason
        if case.raises is CertError:
            assert error.verify_code != 0
            assert (case.verify or case.message) in error.verify_message
        if isinstance(error, fasttls.SSLError) and not isinstance(error, EOF):
            assert isinstance(error.alert, bytes)
    if case.stall:
        assert STALL_TIMEOUT * 0.8 <= elapsed < STALL_TIMEOUT + 5.0, elapsed
    assert bytes(env.received) == case.allowed, "fasttls returned bytes that are not data"
