"""Keyless: the handshake's one private-key operation, handed to the application.

A Context given a certificate chain without its key (`Context.set_keyless_cert(chain, signer)`,
the drop-in's `SSLContext.load_keyless_cert_chain`) serves it with a key that lives elsewhere,
e.g. on a key server. When the server handshake must sign (the TLS 1.3 CertificateVerify, the
TLS 1.2 ECDHE ServerKeyExchange), the engine pauses it (see csrc/fasttls_keyless.c) and
`TLS.handshake()` returns with `TLS.pause` set to a `SigningRequest`: what to sign, with which
TLS signature scheme and which key. Whoever drives the connection resolves it and calls the
handshake again:

* `request.resolve(timeout)` asks the context's `Signer` (`signer.sign(request, timeout)`) and
  blocks up to `timeout` (the helpers and the drop-in socket do this, with the socket's
  timeout); `await request.resolve_async()` awaits `signer.sign_async(request)` (fasttls.aio);
* or sans-IO code gets the signature any way it likes and calls `answer(signature)` (or
  `fail(reason)`).

The signature is checked against the certificate before it goes out. A failure (the signer's
KeylessError, a timeout, a signature that does not verify) makes the next handshake call send
the client an internal_error alert and raise KeylessError naming the cause.

The handshake must be continued on the thread that started it (an OpenSSL ASYNC job; the
drivers always do), and resumed handshakes need no signature at all.
"""
import weakref
from typing import Any, Optional, Protocol, Union

from fasttls._binding import ffi, lib
from fasttls._errors import KeylessError

__all__ = ["Signer", "SigningRequest", "SCHEME_NAMES"]

# TLS SignatureScheme code points (RFC 8446 4.2.3; ECDSA and RSA PKCS#1 with SHA-224 and SHA-1
# only for TLS 1.2, by their RFC 5246 pairs).
SCHEME_NAMES = {
    0x0401: "rsa_pkcs1_sha256",
    0x0501: "rsa_pkcs1_sha384",
    0x0601: "rsa_pkcs1_sha512",
    0x0301: "rsa_pkcs1_sha224",
    0x0201: "rsa_pkcs1_sha1",
    0x0403: "ecdsa_secp256r1_sha256",
    0x0503: "ecdsa_secp384r1_sha384",
    0x0603: "ecdsa_secp521r1_sha512",
    0x0303: "ecdsa_sha224",
    0x0203: "ecdsa_sha1",
    0x0804: "rsa_pss_rsae_sha256",
    0x0805: "rsa_pss_rsae_sha384",
    0x0806: "rsa_pss_rsae_sha512",
}

_SIGN_OK = lib.FASTTLS_SIGN_OK
_BAD_LENGTH = lib.FASTTLS_SIGN_BAD_LENGTH
_BAD_SIGNATURE = lib.FASTTLS_SIGN_BAD_SIGNATURE


class Signer(Protocol):
    """Signs keyless handshakes (fasttls.keyless.KeylessClient is one). Both methods return the
    signature of `request.data` with the key `request.key_id` under `request.scheme` (the
    message itself, not its digest: the signer hashes it as the scheme says), or raise
    KeylessError naming the cause."""

    def sign(self, request: "SigningRequest", timeout: Optional[float]) -> bytes:
        """Blocking, at most `timeout` seconds (None: no limit)."""

    async def sign_async(self, request: "SigningRequest") -> bytes:
        """On the running event loop, never blocking it."""


class SigningRequest:
    """A `fasttls._pause.HandshakePause`: the server handshake waits for a signature.

    `data` is the whole to-be-signed message (TLS 1.3: 64 spaces, the context string, a zero
    byte and the transcript hash; TLS 1.2: both randoms and the ECDHE parameters); `scheme` the
    TLS SignatureScheme (an int, `scheme_name` its name); `key_id` the SHA-256 of the
    certificate's SubjectPublicKeyInfo (DER); `server_name` the SNI the client sent (or None).
    Only the first answer counts; `error` holds the failure, if any."""

    __slots__ = ("_tls", "_signer", "data", "scheme", "key_id", "server_name", "error")

    def __init__(self, tls: Any, signer: Optional[Signer]) -> None:
        conn = tls._conn
        length = ffi.new("size_t *")
        raw = lib.fasttls_sign_data(conn, length)
        # Weakly: the connection holds this (TLS.pause); a strong reference back would make a
        # cycle, and a connection dropped while it waits would then go only with the garbage
        # collector, on whatever thread runs it. Without its connection, a request is moot.
        self._tls: Optional[weakref.ref] = weakref.ref(tls)
        self._signer = signer
        self.data: bytes = ffi.unpack(ffi.cast("char *", raw), length[0]) if raw else b""
        self.scheme: int = lib.fasttls_sign_scheme(conn)
        key_id = lib.fasttls_sign_key_id(conn)
        self.key_id: bytes = ffi.unpack(ffi.cast("char *", key_id), 32) if key_id else b""
        name = lib.fasttls_conn_server_name(conn)
        sni = ffi.string(name).decode("ascii", "replace") if name != ffi.NULL else ""
        if not sni:
            sni = ffi.string(conn.hello_name).decode("ascii", "replace")
        self.server_name: Optional[str] = sni or None
        self.error: Optional[KeylessError] = None

    @property
    def scheme_name(self) -> str:
        return SCHEME_NAMES.get(self.scheme, f"0x{self.scheme:04x}")

    @property
    def resolved(self) -> bool:
        return self._tls is None or self._tls() is None

    def answer(self, signature: Union[bytes, bytearray, memoryview]) -> None:
        """Hand in the signature. One that does not verify against the certificate (or has the
        wrong length) fails the request instead: the handshake then fails with an alert."""
        tls = self._take_tls()
        if tls is None:
            return
        if not isinstance(signature, (bytes, bytearray, memoryview)):
            self._failed(tls, KeylessError(
                f"the signer returned {type(signature).__name__}, not bytes", "SIGNER_ERROR"))
            return
        signature = bytes(signature)
        result = lib.fasttls_sign_answer(tls._conn, signature, len(signature))
        if result == _BAD_LENGTH:
            self._failed(tls, KeylessError(
                f"the {self.scheme_name} signature has the wrong length ({len(signature)} "
                "bytes)", "WRONG_SIGNATURE_LENGTH"), engine=False)
        elif result == _BAD_SIGNATURE:
            self._failed(tls, KeylessError(
                f"the {self.scheme_name} signature does not verify with the certificate's "
                "key (a key server answering for another key?)", "BAD_SIGNATURE"),
                engine=False)
        elif result != _SIGN_OK:
            self._failed(tls, KeylessError("the handshake no longer waits for a signature",
                                           "RELEASED"), engine=False)

    def fail(self, exc_or_reason: Union[BaseException, str]) -> None:
        """No signature: the handshake fails (an alert for the client; the next handshake
        call raises KeylessError). A KeylessError is kept as it is; another exception or a
        text becomes one."""
        tls = self._take_tls()
        if tls is None:
            return
        if isinstance(exc_or_reason, KeylessError):
            error = exc_or_reason
        elif isinstance(exc_or_reason, BaseException):
            error = KeylessError(f"the signer failed: {exc_or_reason!r}", "SIGNER_ERROR")
            error.__cause__ = exc_or_reason
        else:
            error = KeylessError(f"the signer failed: {exc_or_reason}", "SIGNER_ERROR")
        self._failed(tls, error)

    def _take_tls(self) -> Any:
        """The connection, once: only the first answer counts (None after it, or if the
        connection is gone)."""
        ref, self._tls = self._tls, None
        return ref() if ref is not None else None

    def _failed(self, tls: Any, error: KeylessError, engine: bool = True) -> None:
        self.error = error
        tls._sign_error = error
        if engine:
            lib.fasttls_sign_fail(tls._conn)

    def _signer_or_fail(self) -> Optional[Signer]:
        if self._signer is None:
            self.fail(KeylessError("the context has no signer (set_keyless_cert)", "NO_SIGNER"))
        return self._signer

    def resolve(self, timeout: Optional[float]) -> None:
        signer = self._signer_or_fail()
        if signer is None:
            return
        try:
            signature = signer.sign(self, timeout)
        except Exception as exc:
            self.fail(exc)
            return
        except BaseException as exc:  # KeyboardInterrupt...: the handshake fails, it propagates
            self.fail(exc)
            raise
        self.answer(signature)

    async def resolve_async(self) -> None:
        signer = self._signer_or_fail()
        if signer is None:
            return
        try:
            signature = await signer.sign_async(self)
        except Exception as exc:
            self.fail(exc)
            return
        except BaseException:  # cancelled (a timeout, abort()): the handshake fails
            self.fail(KeylessError("the signature was cancelled", "CANCELLED"))
            raise
        self.answer(signature)

    def __repr__(self) -> str:
        state = "resolved" if self._tls is None else "pending"
        return (f"<SigningRequest {self.scheme_name} key {self.key_id.hex()[:16]}... "
                f"sni={self.server_name!r} {state}>")
