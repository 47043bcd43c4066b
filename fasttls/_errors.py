"""Exception classes (subclasses of the stdlib's, so `except ssl.SSLError` works) and the
decoding of OpenSSL's error codes into them.

Errors are read from codes the engine captured (library, reason, verify result), never by
matching message text."""
import ssl

from fasttls._binding import ffi, lib

__all__ = [
    "SSLError",
    "SSLCertVerificationError",
    "SSLZeroReturnError",
    "SSLEOFError",
    "error_from_conn",
    "error_from_queue",
]


class SSLError(ssl.SSLError):
    """A TLS failure. `library` and `reason` are names like the stdlib's ("SSL",
    "WRONG_VERSION_NUMBER"); `lib_code`/`reason_code` are OpenSSL's numbers; `alert` holds the
    bytes (a TLS alert) to send to the peer before giving up, maybe b""."""

    library = None
    reason = None
    lib_code = 0
    reason_code = 0
    alert = b""


class SSLCertVerificationError(SSLError, ssl.SSLCertVerificationError):
    """The peer's certificate failed verification; `verify_code` is OpenSSL's X509_V_ERR_* and
    `verify_message` names the cause and the certificate concerned."""

    verify_code = 0
    verify_message = ""


class SSLZeroReturnError(SSLError, ssl.SSLZeroReturnError):
    """The connection was closed with close_notify (by this side) and cannot carry more data."""


class SSLEOFError(SSLError, ssl.SSLEOFError):
    """The transport ended without close_notify: the data may have been truncated."""


for _cls in (SSLError, SSLCertVerificationError, SSLZeroReturnError, SSLEOFError):
    _cls.__module__ = "fasttls"  # tracebacks show fasttls.SSLError, the public name

_LIBRARY_NAMES = {
    lib.ERR_LIB_SYS: "SYS",
    lib.ERR_LIB_PEM: "PEM",
    lib.ERR_LIB_X509: "X509",
    lib.ERR_LIB_X509V3: "X509V3",
    lib.ERR_LIB_ASN1: "ASN1",
    lib.ERR_LIB_EVP: "EVP",
    lib.ERR_LIB_SSL: "SSL",
    lib.ERR_LIB_BIO: "BIO",
    lib.ERR_LIB_PKCS12: "PKCS12",
    lib.ERR_LIB_RSA: "RSA",
    lib.ERR_LIB_EC: "EC",
}
_CERTIFICATE_VERIFY_FAILED = 134  # SSL_R_CERTIFICATE_VERIFY_FAILED, stable since 1.0
_X509_V_ERR_HOSTNAME_MISMATCH = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH = 64


def _text(ptr):
    return ffi.string(ptr).decode("utf-8", "replace") if ptr != ffi.NULL else None


def _describe(code):
    """(library, reason, lib_code, reason_code, text) for an OpenSSL error code."""
    lib_code = lib.ERR_GET_LIB(code)
    reason_code = lib.ERR_GET_REASON(code)
    text = _text(lib.ERR_reason_error_string(code)) or f"error {reason_code}"
    library = _LIBRARY_NAMES.get(lib_code) or _text(lib.ERR_lib_error_string(code)) or str(lib_code)
    return library, text.upper().replace(" ", "_"), lib_code, reason_code, text


def _build(cls, errno, message, code):
    if code:
        library, reason, lib_code, reason_code, text = _describe(code)
        message = f"[{library}: {reason}] {text}" + (f": {message}" if message else "")
    else:
        library = reason = None
        lib_code = reason_code = 0
    exc = cls(errno, message)
    exc.library, exc.reason, exc.lib_code, exc.reason_code = library, reason, lib_code, reason_code
    return exc


def error_from_queue(what, cls=SSLError):
    """An exception for a failed configuration call, from this thread's OpenSSL error queue."""
    code = lib.ERR_peek_last_error()
    lib.ERR_clear_error()
    exc = _build(cls, ssl.SSL_ERROR_SSL, what, code)
    if not code:
        exc.args = (ssl.SSL_ERROR_SSL, what)
    return exc


def verify_message(conn, hostname):
    """Why verification failed, naming the certificate (and the hostname on a mismatch)."""
    code = conn.verify_code
    if code == _X509_V_ERR_HOSTNAME_MISMATCH:
        cause = f"Hostname mismatch, certificate is not valid for {hostname!r}."
    elif code == _X509_V_ERR_IP_ADDRESS_MISMATCH:
        cause = f"IP address mismatch, certificate is not valid for {hostname!r}."
    else:
        cause = _text(lib.X509_verify_cert_error_string(code))
    subject = ffi.string(conn.verify_subject).decode("utf-8", "replace")
    if subject:
        cause += f" (certificate at depth {conn.verify_depth}: {subject})"
    return cause


def error_from_conn(conn, hostname=None):
    """The exception for a failed engine call on `conn`, with the alert bytes left unset."""
    code = conn.err_code
    errno = conn.ssl_error
    if code and lib.ERR_GET_LIB(code) == lib.ERR_LIB_SSL and (
        lib.ERR_GET_REASON(code) == _CERTIFICATE_VERIFY_FAILED
    ):
        message = verify_message(conn, hostname)
        exc = _build(SSLCertVerificationError, ssl.SSL_ERROR_SSL, message, code)
        exc.verify_code = conn.verify_code
        exc.verify_message = message
        return exc
    if not code:
        return _build(SSLError, errno, f"TLS failure (OpenSSL SSL_get_error {errno})", 0)
    return _build(SSLError, errno, "", code)
