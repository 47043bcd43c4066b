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
    "KeylessError",
    "OCSPError",
    "error_from_conn",
    "error_from_queue",
    "report_unraisable",
]


class SSLError(ssl.SSLError):
    """A TLS failure. `library` and `reason` are names like the stdlib's ("SSL",
    "WRONG_VERSION_NUMBER"); `lib_code`/`reason_code` are OpenSSL's numbers; `alert` holds the
    bytes (a TLS alert) to send to the peer before giving up, maybe b""."""

    # typeshed types the stdlib's as str, but the stdlib too leaves them None for an error
    # that OpenSSL does not name.
    library: "str | None" = None  # type: ignore[assignment]
    reason: "str | None" = None  # type: ignore[assignment]
    lib_code = 0
    reason_code = 0
    alert = b""


class SSLCertVerificationError(SSLError, ssl.SSLCertVerificationError):
    """The peer's certificate failed verification. `verify_code` is OpenSSL's X509_V_ERR_* and
    `verify_message` its text, exactly as the stdlib gives them ("unable to get local issuer
    certificate", "Hostname mismatch, certificate is not valid for 'x'."). The certificate
    concerned is in `verify_depth` (0 the peer's own, None if unknown) and `verify_subject`
    (OpenSSL's one-line form, "" if unknown); str(exc) names it too."""

    verify_code = 0
    verify_message = ""
    verify_depth: "int | None" = None
    verify_subject = ""
    # Set when require_ocsp_staple failed the handshake: an OCSPError.cause, or "missing".
    ocsp_cause = ""


class SSLZeroReturnError(SSLError, ssl.SSLZeroReturnError):
    """The connection was closed with close_notify (by this side) and cannot carry more data."""


class SSLEOFError(SSLError, ssl.SSLEOFError):
    """The transport ended without close_notify: the data may have been truncated."""


class KeylessError(SSLError):
    """A keyless signature could not be had (fasttls._signing): the signer failed, timed out,
    refused, or answered with a signature that does not verify. `reason` names the cause
    ("TIMEOUT", "SIGNER_ERROR", "BAD_SIGNATURE", "WRONG_SIGNATURE_LENGTH", "RELEASED", or a
    signer's own, e.g. a key server's "UNKNOWN_KEY_ID"). Raised by a Signer, and by the
    handshake that could not be completed for it (then with `alert`, the internal_error alert
    for the client, as for any handshake failure)."""

    library = "KEYLESS"

    def __init__(self, message: str, reason: str = "SIGNER_ERROR") -> None:
        super().__init__(ssl.SSL_ERROR_SSL, message)
        self.reason = reason

    def __reduce__(self) -> "tuple":
        # OSError's reduce would call the class with its args, (errno, message): rebuild from
        # (message, reason) instead, then restore the rest (alert, ...) from __dict__, so the
        # error crosses process boundaries (multiprocessing, concurrent.futures) intact.
        return type(self), (self.strerror, self.reason), self.__dict__


class OCSPError(SSLError):
    """An OCSP response for stapling could not be had (fasttls.OCSPStapler) or is not good.
    `cause` names why: "no certificate", "no responder" (the certificate names no OCSP
    responder), "no issuer", "http" (the responder answered with an HTTP error or could not be
    reached), "timeout", "malformed", "unsuccessful" (responseStatus tryLater, internalError,
    ...), "bad signature" (not signed by the issuer or a responder it delegated to), "not for
    this certificate", "revoked", "unknown", "expired"."""

    cause = ""


for _cls in (SSLError, SSLCertVerificationError, SSLZeroReturnError, SSLEOFError, KeylessError,
             OCSPError):
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
    """Why verification failed, in the stdlib's words (its verify_message)."""
    code = conn.verify_code
    if code == _X509_V_ERR_HOSTNAME_MISMATCH:
        return f"Hostname mismatch, certificate is not valid for {hostname!r}."
    if code == _X509_V_ERR_IP_ADDRESS_MISMATCH:
        return f"IP address mismatch, certificate is not valid for {hostname!r}."
    return _text(lib.X509_verify_cert_error_string(code)) or f"error {code}"


# What each fasttls_ocsp_check result means (FASTTLS_OCSP_*), as OCSPError.cause.
OCSP_CAUSES = {
    lib.FASTTLS_OCSP_MALFORMED: "malformed",
    lib.FASTTLS_OCSP_UNSUCCESSFUL: "unsuccessful",
    lib.FASTTLS_OCSP_BAD_SIGNATURE: "bad signature",
    lib.FASTTLS_OCSP_NOT_FOR_CERT: "not for this certificate",
    lib.FASTTLS_OCSP_REVOKED: "revoked",
    lib.FASTTLS_OCSP_UNKNOWN: "unknown",
    lib.FASTTLS_OCSP_EXPIRED: "expired",
    lib.FASTTLS_OCSP_MISSING: "missing",
    lib.FASTTLS_OCSP_NO_ISSUER: "no issuer",
}
OCSP_MESSAGES = {
    lib.FASTTLS_OCSP_MALFORMED: "the OCSP response is not a DER OCSPResponse",
    lib.FASTTLS_OCSP_UNSUCCESSFUL: "the OCSP responder did not answer successfully",
    lib.FASTTLS_OCSP_BAD_SIGNATURE: "the OCSP response is not signed by the certificate's "
                                    "issuer or a responder it delegated to",
    lib.FASTTLS_OCSP_NOT_FOR_CERT: "the OCSP response is not about this certificate",
    lib.FASTTLS_OCSP_REVOKED: "the OCSP response says the certificate is revoked",
    lib.FASTTLS_OCSP_UNKNOWN: "the OCSP responder does not know the certificate",
    lib.FASTTLS_OCSP_EXPIRED: "the OCSP response is expired (past nextUpdate) or not yet valid",
    lib.FASTTLS_OCSP_MISSING: "the server stapled no OCSP response (require_ocsp_staple)",
    lib.FASTTLS_OCSP_NO_ISSUER: "the certificate's issuer is not known, so its OCSP status "
                                "cannot be checked",
}
_SSL_R_INVALID_STATUS_RESPONSE = 328


def _ocsp_failure(conn, code):
    """The verification error of a handshake that require mode failed, else None."""
    failure = lib.fasttls_conn_ocsp_failure(conn) if conn.ssl != ffi.NULL else 0
    if not failure:
        return None
    cause = OCSP_MESSAGES.get(failure, f"OCSP check {failure} failed")
    subject = ffi.string(conn.verify_subject).decode("utf-8", "replace")
    detail = f" (certificate at depth 0: {subject})" if subject else ""
    exc = _build(SSLCertVerificationError, ssl.SSL_ERROR_SSL, cause + detail, code)
    exc.verify_code = conn.verify_code
    exc.verify_message = cause
    exc.verify_depth = 0 if subject else None
    exc.verify_subject = subject
    exc.ocsp_cause = OCSP_CAUSES.get(failure, "")
    return exc


def error_from_conn(conn, hostname=None):
    """The exception for a failed engine call on `conn`, with the alert bytes left unset."""
    code = conn.err_code
    errno = conn.ssl_error
    if code and lib.ERR_GET_LIB(code) == lib.ERR_LIB_SSL and (
        lib.ERR_GET_REASON(code) == _SSL_R_INVALID_STATUS_RESPONSE
    ):
        ocsp = _ocsp_failure(conn, code)
        if ocsp is not None:
            return ocsp
    if code and lib.ERR_GET_LIB(code) == lib.ERR_LIB_SSL and (
        lib.ERR_GET_REASON(code) == _CERTIFICATE_VERIFY_FAILED
    ):
        cause = verify_message(conn, hostname)
        subject = ffi.string(conn.verify_subject).decode("utf-8", "replace")
        # The message also names the certificate concerned (the stdlib's does not).
        detail = f" (certificate at depth {conn.verify_depth}: {subject})" if subject else ""
        exc = _build(SSLCertVerificationError, ssl.SSL_ERROR_SSL, cause + detail, code)
        exc.verify_code = conn.verify_code
        exc.verify_message = cause
        exc.verify_depth = conn.verify_depth if subject else None
        exc.verify_subject = subject
        return exc
    if not code:
        return _build(SSLError, errno, f"TLS failure (OpenSSL SSL_get_error {errno})", 0)
    return _build(SSLError, errno, "", code)


class _RaiseWhenCollected:
    """An exception Python itself reports as unraisable: raised from __del__, it goes through
    the interpreter's own PyErr_WriteUnraisable, hence to sys.unraisablehook (which insists on
    the interpreter's own argument type, so it cannot be called directly)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __del__(self) -> None:
        raise self.exc


def transport_eof() -> SSLEOFError:
    """The transport ended without close_notify (truncation), worded as the stdlib words it
    (anyio and trio match the reason)."""
    error = SSLEOFError(ssl.SSL_ERROR_EOF,
                        "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol")
    error.library, error.reason = "SSL", "UNEXPECTED_EOF_WHILE_READING"
    return error


def report_unraisable(exc: BaseException) -> None:
    """Report an exception of a callback that cannot raise into its caller (it runs inside an
    engine call) to sys.unraisablehook, as the stdlib reports those of its callbacks."""
    _RaiseWhenCollected(exc)  # collected at once (no other reference)
