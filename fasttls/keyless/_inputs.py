"""What the key server agrees to sign: only TLS server signature inputs.

A key server that signs anything is a signing oracle for whoever reaches it: it could sign a
certificate, a JWT, a client's CertificateVerify. So it signs only the two messages a TLS server
signs with its certificate key, checked byte for byte:

- TLS 1.3 CertificateVerify (RFC 8446 4.4.3): 64 spaces, "TLS 1.3, server CertificateVerify",
  a zero byte, then the transcript hash: 32 bytes (SHA-256 suites) or 48 (SHA-384). The client's
  context string is refused. RSASSA-PKCS1-v1_5 is not a TLS 1.3 CertificateVerify scheme.
- TLS 1.2 ServerKeyExchange for ECDHE (RFC 8422 5.4): client random (32) + server random (32)
  + ServerECDHParams: curve_type 3 (named_curve), a named group, a one-byte length and a point
  of exactly the group's size (uncompressed for the NIST curves). No finite-field DHE, no
  explicit curves.
"""
from typing import Optional

__all__ = ["refusal"]

TLS13_SERVER_PREFIX = b"\x20" * 64 + b"TLS 1.3, server CertificateVerify\x00"
TLS13_HASH_SIZES = (32, 48)
_PKCS1_SCHEMES = (0x0401, 0x0501, 0x0601)

# TLS NamedGroup code points and the size of their ECDHE public value.
_POINT_SIZES = {
    23: 65,    # secp256r1, uncompressed
    24: 97,    # secp384r1, uncompressed
    25: 133,   # secp521r1, uncompressed
    29: 32,    # x25519
    30: 56,    # x448
}
_NIST = (23, 24, 25)
_NAMED_CURVE = 3


def refusal(data: bytes, scheme: int) -> Optional[str]:
    """None if `data` is a TLS server signature input that `scheme` may sign, else why not."""
    if data.startswith(TLS13_SERVER_PREFIX):
        hash_len = len(data) - len(TLS13_SERVER_PREFIX)
        if hash_len not in TLS13_HASH_SIZES:
            return (f"TLS 1.3 CertificateVerify input with a {hash_len}-byte transcript hash "
                    f"(32 or 48 expected)")
        if scheme in _PKCS1_SCHEMES:
            return "RSA PKCS#1 v1.5 is not a TLS 1.3 CertificateVerify scheme"
        return None
    return _tls12_refusal(data)


def _tls12_refusal(data: bytes) -> Optional[str]:
    if len(data) < 64 + 4:
        return "neither a TLS 1.3 server CertificateVerify nor a TLS 1.2 ECDHE input"
    params = data[64:]
    if params[0] != _NAMED_CURVE:
        return ("neither a TLS 1.3 server CertificateVerify nor a TLS 1.2 ECDHE input "
                f"(curve_type {params[0]}, not named_curve)")
    group = int.from_bytes(params[1:3], "big")
    size = _POINT_SIZES.get(group)
    if size is None:
        return f"TLS 1.2 ECDHE input with an unknown named group {group}"
    if params[3] != size or len(params) != 4 + size:
        return (f"TLS 1.2 ECDHE input whose point is not the {size} bytes of group {group}, "
                "or with bytes after it")
    if group in _NIST and params[4] != 4:
        return "TLS 1.2 ECDHE input with a point that is not uncompressed"
    return None
