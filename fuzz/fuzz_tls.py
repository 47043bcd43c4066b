"""atheris harness: arbitrary bytes fed to a fasttls client and to a fasttls server at each stage.

    python fuzz/fuzz_tls.py --target=server_handshake [libFuzzer options] [corpus dirs]

Targets (the endpoint that receives the fuzzed bytes is the "victim"; its "peer" is a genuine
fasttls endpoint in memory):

  client_handshake  a client that sent its ClientHello gets the input as the server's flights
  server_handshake  a fresh server gets the input as the client's flights
  client_data       a client after a completed handshake: the input is a list of operations
  server_data       the same for a server
  client_closed     a client after close_notify (sent, received or both), then operations
  server_closed     the same for a server
  dropin_<any of the above>
                    the same through the drop-in layer: an ssl.SSLObject made by
                    fasttls.SSLContext.wrap_bio over ssl.MemoryBIOs (both ends); the documented
                    failures there are ssl.SSLError and its subclasses (fasttls's included)

Input format. Byte 0 holds options: bits 0-1 the version (0/3: default, 1: TLS 1.2 only,
2: TLS 1.3 only), bits 2-4 the chunking of a handshake input (whole, 1, 2, 7, 64, 512 or
4096-byte pieces) or, for the closed targets, how the connection was closed, bit 5 the server
key (ECDSA/RSA), bit 6 mutual TLS (the server requires the client's certificate), bit 7 ALPN.
Handshake targets: the rest of the input is the bytes received. Data and closed targets: the
rest is a list of operations, each an opcode byte (mod 10) and its arguments; see OPS below.
Operations mix raw fuzzed bytes with genuine records from the peer (whole, split, or with one
byte flipped), writes, closes and buffer releases.

Findings (libFuzzer stops and saves the input as a crash artifact):
* any exception other than fasttls.SSLError and its subclasses (the documented failure classes;
  the harness never passes an invalid argument, so no ValueError/TypeError is acceptable),
* a crash of the process (signal) or an input that runs longer than -timeout,
* plaintext that the peer did not send (the victim's output must always be a prefix of the
  peer's genuine plaintext; nothing after close_notify; nothing from a handshake fed only
  fuzzed bytes, which cannot authenticate).

The certificates in fuzz/certs/ are test-only; fuzz/make_corpus.py writes them and the seeds.
"""
import hashlib
import os
import ssl
import sys

import atheris

with atheris.instrument_imports(include=["fasttls"]):
    import fasttls

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from support.pump import pump  # noqa: E402  (the tests' in-memory handshake)
NATIVE_TARGETS = ("client_handshake", "server_handshake", "client_data", "server_data",
                  "client_closed", "server_closed")
TARGETS = NATIVE_TARGETS + tuple("dropin_" + t for t in NATIVE_TARGETS)
CHUNKS = (0, 1, 2, 7, 64, 512, 4096, 0)  # 0: all at once
MAX_OPS = 64
NATIVE_ERROR = fasttls.SSLError  # the native API's documented failures
DROPIN_ERROR = ssl.SSLError  # the stdlib API's (fasttls's classes subclass them)


def _pem(name):
    with open(os.path.join(HERE, "certs", name), "rb") as f:
        return f.read()


_contexts = {}


def _context(kind, *key):
    """Contexts are made once and shared by all inputs (as an application would)."""
    ctx = _contexts.get((kind,) + key)
    if ctx is not None:
        return ctx
    if kind == "client":
        version, alpn, mtls = key
        options = {}
        if version == 1:
            options["maximum_version"] = ssl.TLSVersion.TLSv1_2
        elif version == 2:
            options["minimum_version"] = ssl.TLSVersion.TLSv1_3
        ctx = fasttls.newctx(cadata=_pem("ca.pem"), **options)
        if alpn:
            ctx.set_alpn_protocols(["h2", "http/1.1"])
        if mtls:
            ctx.set_cert(_pem("ecdsa-chain.pem"), _pem("ecdsa-key.pem"))
    else:
        key_type, alpn, mtls = key
        ctx = fasttls.newctx()
        ctx.set_cert(_pem(f"{key_type}-chain.pem"), _pem(f"{key_type}-key.pem"))
        if alpn:
            ctx.set_alpn_protocols(["http/1.1", "h2"])
        if mtls:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=_pem("ca.pem"))
    _contexts[(kind,) + key] = ctx
    return ctx


def _dropin_context(kind, version, alpn, mtls, key_type="ecdsa"):
    key = ("dropin", kind, version, alpn, mtls, key_type)
    ctx = _contexts.get(key)
    if ctx is not None:
        return ctx
    certs = os.path.join(HERE, "certs")
    if kind == "client":
        ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=_pem("ca.pem").decode())
        if version == 1:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        elif version == 2:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if mtls:
            ctx.load_cert_chain(os.path.join(certs, "ecdsa-chain.pem"),
                                os.path.join(certs, "ecdsa-key.pem"))
        if alpn:
            ctx.set_alpn_protocols(["h2", "http/1.1"])
    else:
        ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(certs, f"{key_type}-chain.pem"),
                            os.path.join(certs, f"{key_type}-key.pem"))
        if mtls:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=_pem("ca.pem").decode())
        if alpn:
            ctx.set_alpn_protocols(["http/1.1", "h2"])
    _contexts[key] = ctx
    return ctx


class DropinTLS:
    """An ssl.SSLObject from fasttls.SSLContext.wrap_bio, behind the methods the harness
    drives (those of fasttls.TLS): bytes in, bytes out."""

    def __init__(self, ctx, server_side, hostname=None):
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                server_hostname=hostname)
        self.done = self.eof = False
        self.pending_error = None

    def handshake(self, data=b""):
        if data:
            self.incoming.write(data)
        try:
            self.obj.do_handshake()
            self.done = True
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    def finished(self):
        return self.done

    def read(self, data=b""):
        if self.pending_error is not None:
            error, self.pending_error = self.pending_error, None
            raise error
        if data:
            self.incoming.write(data)
        out = bytearray()
        while True:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.eof = True
                break
            except ssl.SSLError as exc:
                if not out:
                    raise
                self.pending_error = exc  # plaintext first, the error on the next call
                break
            if not chunk:
                self.eof = True
                break
            out += chunk
        return bytes(out)

    def write(self, data=b""):
        if data:
            self.obj.write(data)
        return self.outgoing.read()

    def close(self):
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            pass  # unwrap of a broken or unfinished connection: nothing to send
        return self.outgoing.read()

    def release_buffers(self):
        self.obj.pending()

    def describe(self):
        obj = self.obj
        _ = obj.version(), obj.cipher(), obj.selected_alpn_protocol(), obj.pending()
        _ = obj.session_reused, obj.server_side, obj.server_hostname
        if self.done:
            _ = obj.getpeercert(), obj.getpeercert(True), obj.shared_ciphers()


def new_pair(options, dropin=False):
    if dropin:
        version, mtls, alpn = options & 3, bool(options & 0x40), bool(options & 0x80)
        key_type = "rsa" if options & 0x20 else "ecdsa"
        client = DropinTLS(_dropin_context("client", version, alpn, mtls), False, "localhost")
        server = DropinTLS(_dropin_context("server", version, alpn, mtls, key_type), True)
        return client, server

    version = options & 3
    key_type = "rsa" if options & 0x20 else "ecdsa"
    mtls = bool(options & 0x40)
    alpn = bool(options & 0x80)
    client = fasttls.newtls("client", _context("client", version, alpn, mtls), "localhost")
    server = fasttls.newtls("server", _context("server", key_type, alpn, mtls))
    return client, server


def _describe(tls):
    """Informational calls must never fail, whatever state the connection is in."""
    if isinstance(tls, DropinTLS):
        tls.describe()
        return
    _ = tls.finished(), tls.version(), tls.cipher(), tls.selected_alpn_protocol()
    _ = tls.session_reused(), tls.getpeercert(), tls.getpeercert(True), tls.pending_output
    _ = tls.session


# ------------------------------------------------------------------------------ handshake


def fuzz_handshake(role, data, dropin=False):
    options, payload = data[0], data[1:]
    client, server = new_pair(options, dropin)
    Error = DROPIN_ERROR if dropin else NATIVE_ERROR
    victim = client if role == "client" else server
    if role == "client":
        client.handshake()  # the ClientHello goes nowhere; the input plays the server
    size = CHUNKS[(options >> 2) & 7] or max(len(payload), 1)
    try:
        for i in range(0, max(len(payload), 1), size):
            chunk = payload[i:i + size]
            if victim.finished():
                raise AssertionError("handshake completed from unauthenticated input")
            victim.handshake(chunk)
        victim.handshake()
    except Error:
        pass
    if victim.finished():
        raise AssertionError("handshake completed from unauthenticated input")
    _describe(victim)
    try:
        victim.read(b"\x17\x03\x03\x00\x05hello")
    except Error:
        pass
    victim.close()
    _describe(victim)


# ------------------------------------------------------------------------ data and closed

OP_RAW, OP_PEER_DATA, OP_PEER_SPLIT, OP_PEER_FLIP, OP_VICTIM_WRITE, OP_PEER_CLOSE, \
    OP_VICTIM_CLOSE, OP_RELEASE, OP_FLUSH, OP_HANDSHAKE = range(10)
OPS = {  # opcode: (number of argument bytes, meaning)
    OP_RAW: ("2-byte length L, L bytes", "victim.read(the bytes)"),
    OP_PEER_DATA: ("n", "peer.write(n*100+1 bytes); victim.read(the records)"),
    OP_PEER_SPLIT: ("n, 2-byte position", "the same, fed in two pieces"),
    OP_PEER_FLIP: ("2-byte position, xor", "a genuine record with one byte changed"),
    OP_VICTIM_WRITE: ("n", "victim.write(n*100+1 bytes); peer.read(them)"),
    OP_PEER_CLOSE: ("", "victim.read(peer.close())"),
    OP_VICTIM_CLOSE: ("", "peer.read(victim.close())"),
    OP_RELEASE: ("", "victim.release_buffers()"),
    OP_FLUSH: ("", "peer.read(victim.write())"),
    OP_HANDSHAKE: ("2-byte length L, L bytes", "victim.handshake(the bytes)"),
}


def op(code, *args):
    return bytes([code, *args])


def op_raw(blob, code=OP_RAW):
    blob = blob[:0xFFFF]
    return bytes([code, len(blob) >> 8, len(blob) & 0xFF]) + blob


def op_handshake(blob):
    return op_raw(blob, OP_HANDSHAKE)


class Session:
    def __init__(self, victim, peer, error):
        self.victim, self.peer = victim, peer
        self.error = error
        self.sent = bytearray()  # genuine plaintext the peer wrote
        self.got = bytearray()  # what the victim returned as plaintext
        self.written = bytearray()  # what the victim wrote
        self.peer_got = bytearray()
        self.counter = 0

    def payload(self, n):
        self.counter += 1
        seed = hashlib.sha256(b"%d" % self.counter).digest()
        return (seed * (n // len(seed) + 1))[:n]

    def deliver(self, blob):
        """Feed bytes to the victim; check the plaintext it returns."""
        was_eof = self.victim.eof
        try:
            out = self.victim.read(blob)
        except self.error:
            return
        if out and was_eof:
            raise AssertionError("plaintext returned after close_notify")
        self.got += out
        if not self.sent.startswith(self.got):
            raise AssertionError("the victim returned plaintext the peer never sent")

    def peer_write(self, n):
        """Genuine records from the peer, or None if the peer can no longer write."""
        data = self.payload(n)
        try:
            records = self.peer.write(data)
        except self.error:
            return None
        self.sent += data
        return records

    def to_peer(self, blob):
        if not blob:
            return
        try:
            out = self.peer.read(blob)
        except self.error:
            return
        self.peer_got += out
        if not self.written.startswith(self.peer_got):
            raise AssertionError("the peer decrypted something the victim never wrote")

    def run(self, ops):
        pos, count = 0, 0
        while pos < len(ops) and count < MAX_OPS:
            code, pos, count = ops[pos] % 10, pos + 1, count + 1

            def arg(n):
                nonlocal pos
                value = ops[pos:pos + n]
                pos += n
                return int.from_bytes(value, "big") if value else 0

            if code in (OP_RAW, OP_HANDSHAKE):
                length = arg(2)
                blob, pos = ops[pos:pos + length], pos + length
                if code == OP_RAW:
                    self.deliver(blob)
                else:
                    try:
                        self.victim.handshake(blob)
                    except self.error:
                        pass
            elif code in (OP_PEER_DATA, OP_PEER_SPLIT):
                records = self.peer_write(arg(1) * 100 + 1)
                cut = arg(2) if code == OP_PEER_SPLIT else 0
                if records is not None:
                    cut %= len(records) + 1
                    self.deliver(records[:cut])
                    self.deliver(records[cut:])
            elif code == OP_PEER_FLIP:
                where, xor = arg(2), arg(1) or 1
                records = self.peer_write(50)
                if records:
                    forged = bytearray(records)
                    forged[where % len(forged)] ^= xor
                    self.deliver(bytes(forged))
            elif code in (OP_VICTIM_WRITE, OP_FLUSH):
                data = self.payload(arg(1) * 100 + 1) if code == OP_VICTIM_WRITE else b""
                try:
                    out = self.victim.write(data)
                except self.error:
                    continue
                self.written += data
                self.to_peer(out)
            elif code == OP_PEER_CLOSE:
                self.deliver(self.peer.close())
            elif code == OP_VICTIM_CLOSE:
                self.to_peer(self.victim.close())
            elif code == OP_RELEASE:
                self.victim.release_buffers()


def fuzz_connected(role, data, closed, dropin=False):
    options, ops = data[0], data[1:]
    client, server = new_pair(options, dropin)
    pump(client, server, client.handshake())
    victim, peer = (client, server) if role == "client" else (server, client)
    session = Session(victim, peer, DROPIN_ERROR if dropin else NATIVE_ERROR)
    if closed:
        mode = (options >> 2) & 3
        if mode in (0, 2):
            session.to_peer(victim.close())
        if mode in (1, 2):
            session.deliver(peer.close())
        if mode == 3:
            victim.close()  # never delivered
    session.run(ops)
    _describe(victim)
    victim.close()
    victim.close()
    _describe(victim)


def make_entry(target):
    dropin = target.startswith("dropin_")
    role, stage = target[len("dropin_") if dropin else 0:].split("_")
    if stage == "handshake":
        def entry(data):
            if data:
                fuzz_handshake(role, data, dropin)
    else:
        closed = stage == "closed"

        def entry(data):
            if data:
                fuzz_connected(role, data, closed, dropin)
    return entry


def main(argv):
    target = os.environ.get("FASTTLS_FUZZ_TARGET")
    rest = []
    for a in argv[1:]:
        if a.startswith("--target="):
            target = a.split("=", 1)[1]
        else:
            rest.append(a)
    if target not in TARGETS:
        sys.exit(f"usage: {argv[0]} --target=<{'|'.join(TARGETS)}> [libFuzzer options] [corpus]")
    atheris.Setup([argv[0]] + rest, make_entry(target))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
