"""`Certificate`: one certificate of a peer's chain, with the interface of the stdlib's
`_ssl.Certificate` (what `SSLSocket.get_verified_chain()` and `get_unverified_chain()` read)."""
import ssl
from typing import Any, Dict, Tuple

from fasttls._certinfo import certificate_der, certificate_dict

__all__ = ["Certificate"]

# The stdlib's _ssl.ENCODING_PEM / ENCODING_DER (OpenSSL's X509_FILETYPE_PEM / _ASN1); _ssl
# has them from Python 3.10 on.
ENCODING_PEM = 1
ENCODING_DER = 2

# RFC 4514 short names of the attributes certificate_dict() spells out.
_SHORT_NAMES = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
    "localityName": "L", "stateOrProvinceName": "ST", "countryName": "C",
    "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID",
}


class Certificate:
    """A parsed certificate; equal (and hashed) by its DER encoding, as the stdlib's."""

    __slots__ = ("_x509", "_der")

    def __init__(self, x509) -> None:
        self._x509 = x509  # owned (ffi.gc) by the caller's cdata
        self._der: bytes = certificate_der(x509)

    def public_bytes(self, format: int = ENCODING_PEM) -> Any:  # noqa: A002 (stdlib's name)
        """PEM text (the default) or DER bytes."""
        if format == ENCODING_DER:
            return self._der
        if format == ENCODING_PEM:
            return ssl.DER_cert_to_PEM_cert(self._der)
        raise ValueError("Unsupported format")

    def get_info(self) -> Dict[str, Any]:
        """The dict getpeercert() gives for a verified certificate."""
        return certificate_dict(self._x509)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Certificate):
            return NotImplemented
        return self._der == other._der

    def __hash__(self) -> int:
        return hash(self._der)

    def __repr__(self) -> str:
        return f"<Certificate {_rfc4514(self.get_info()['subject'])!r}>"


def _rfc4514(subject: Tuple[Tuple[Tuple[str, str], ...], ...]) -> str:
    """The subject as OpenSSL's X509_NAME_print_ex(XN_FLAG_RFC2253) writes it: last RDN first."""
    rdns = ("+".join(f"{_SHORT_NAMES.get(name, name)}={value}" for name, value in rdn)
            for rdn in reversed(subject))
    return ",".join(rdns)
