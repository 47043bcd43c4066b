"""TLS records by hand, for the hostile-peer tests (support.hostile): framing, and sealing and
opening records as one side of a live connection with that side's real keys, derived from the
stdlib peer's key log (AES-128-GCM-SHA256 only)."""
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from support.pairs import TLS13

# TLS wire constants
ALERT, HANDSHAKE, APPLICATION_DATA = 21, 22, 23
CLOSE_NOTIFY = b"\x01\x00"
HELLO_REQUEST = b"\x00\x00\x00\x00"
NO_RENEGOTIATION_WARNING = b"\x01\x64"


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
