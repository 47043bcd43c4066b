"""The mutual-TLS contexts of the keyless link, and the key server's allow-list of edges.

The key server trusts only the dedicated edge CA (never the system store) and requires a client
certificate; a certificate from that CA is still refused unless the edge's identity is on the
allow-list, so one CA can serve several key servers with different edges.
"""
import hashlib
import ssl
from typing import Any, Dict, FrozenSet, Iterable, Optional, Tuple, Union

from fasttls.stdlib import SSLContext

__all__ = ["server_context", "client_context", "AllowList"]

_Pathish = Any  # str or os.PathLike


def server_context(certfile: _Pathish, keyfile: Optional[_Pathish], client_ca: _Pathish,
                   password: Union[str, bytes, None] = None) -> SSLContext:
    """The key server's context: its own identity, client certificates required from
    `client_ca` (a PEM file) only, TLS 1.2 or newer."""
    ctx = SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile, password)
    ctx.load_verify_locations(cafile=client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(certfile: _Pathish, keyfile: Optional[_Pathish], server_ca: _Pathish,
                   password: Union[str, bytes, None] = None) -> SSLContext:
    """An edge's context: its client certificate, the key server verified against `server_ca`
    (a PEM file) with its host name checked, TLS 1.2 or newer."""
    ctx = SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile, password)
    ctx.load_verify_locations(cafile=server_ca)
    return ctx


def require_client_certificates(context: ssl.SSLContext) -> None:
    """Refuse a key server context that would let an edge in without a certificate."""
    if not isinstance(context, SSLContext):
        raise TypeError("the key server needs a fasttls.SSLContext (see "
                        "fasttls.keyless.server_context)")
    if context.verify_mode != ssl.CERT_REQUIRED:
        raise ValueError("the key server's context must require client certificates "
                         "(verify_mode = ssl.CERT_REQUIRED)")


class AllowList:
    """Edge identities the key server answers: names matched against the certificate's DNS
    subjectAltNames and subject commonName, and "sha256:HEX" certificate fingerprints."""

    def __init__(self, entries: Iterable[str]) -> None:
        names, prints = set(), set()
        for entry in entries:
            if entry.lower().startswith("sha256:"):
                hexdigits = entry[7:].replace(":", "").lower()
                try:
                    fingerprint = bytes.fromhex(hexdigits)
                except ValueError:
                    fingerprint = b""
                if len(hexdigits) != 64 or len(fingerprint) != 32:
                    raise ValueError(f"{entry!r}: a SHA-256 fingerprint has 64 hex digits")
                prints.add(fingerprint)
            elif entry:
                names.add(entry.lower())
        if not names and not prints:
            raise ValueError("the allow-list of edges is empty: name at least one edge")
        self.names: FrozenSet[str] = frozenset(names)
        self.fingerprints: FrozenSet[bytes] = frozenset(prints)

    def check(self, decoded: Optional[Dict[str, Any]],
              der: Optional[bytes]) -> Tuple[bool, str]:
        """(allowed, the identity as the key server names it in logs and refusals)."""
        if not der:
            return False, "no client certificate"
        fingerprint = hashlib.sha256(der).digest()
        identities = _identities(decoded or {})
        described = ", ".join(identities) or "no DNS name or CN"
        who = f"{described} (sha256:{fingerprint.hex()})"
        if fingerprint in self.fingerprints:
            return True, who
        return any(name.lower() in self.names for name in identities), who


def _identities(decoded: Dict[str, Any]) -> "list[str]":
    names = [value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]
    for rdn in decoded.get("subject", ()):
        names += [value for key, value in rdn if key == "commonName" and value not in names]
    return names
