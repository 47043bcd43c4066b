"""Keyless signers for the tests: the private key held by `cryptography` in this process, standing
in for a key server (the real one, fasttls.keyless, has its own tests). Each implements
fasttls's Signer protocol: sign(request, timeout) and async sign_async(request)."""
import asyncio
import threading
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from fasttls import KeylessError

_HASHES = {4: hashes.SHA256, 5: hashes.SHA384, 6: hashes.SHA512, 3: hashes.SHA224,
           2: hashes.SHA1}


class LocalSigner:
    """Signs with a PEM private key; counts requests; `delay` seconds before each answer
    (honouring the timeout: a longer delay raises KeylessError "TIMEOUT" when it expires)."""

    def __init__(self, key_pem: bytes, delay: float = 0.0) -> None:
        self.key = serialization.load_pem_private_key(key_pem, None)
        self.delay = delay
        self.requests = []
        self.lock = threading.Lock()

    def signature(self, request) -> bytes:
        scheme = request.scheme
        digest = _HASHES[scheme >> 8 if scheme >> 8 != 8 else (scheme & 0xFF)]()
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(request.data, ec.ECDSA(digest))
        assert isinstance(self.key, rsa.RSAPrivateKey)
        if scheme >> 8 == 8:
            pad = padding.PSS(padding.MGF1(digest), padding.PSS.DIGEST_LENGTH)
        else:
            pad = padding.PKCS1v15()
        return self.key.sign(request.data, pad, digest)

    def _note(self, request) -> None:
        with self.lock:
            self.requests.append(request)

    def delay_for(self, request) -> float:
        return self.delay

    def sign(self, request, timeout):
        self._note(request)
        delay = self.delay_for(request)
        if delay:
            if timeout is not None and delay > timeout:
                time.sleep(timeout)
                raise KeylessError("the signer timed out", "TIMEOUT")
            time.sleep(delay)
        return self.signature(request)

    async def sign_async(self, request):
        self._note(request)
        delay = self.delay_for(request)
        if delay:
            await asyncio.sleep(delay)
        return self.signature(request)


class FailingSigner(LocalSigner):
    """Refuses every request, as a key server that does not know the key."""

    def sign(self, request, timeout):
        self._note(request)
        raise KeylessError("the key server does not know this key", "UNKNOWN_KEY_ID")

    async def sign_async(self, request):
        self._note(request)
        raise KeylessError("the key server does not know this key", "UNKNOWN_KEY_ID")


class TruncatingSigner(LocalSigner):
    """Answers with a signature cut short."""

    def signature(self, request) -> bytes:
        return super().signature(request)[:-7]


class OtherKeySigner(LocalSigner):
    """Signs with another key than the certificate's (a well-formed but wrong signature)."""


class SlowForNameSigner(LocalSigner):
    """Slow (`delay` seconds, honouring the timeout) only for requests whose SNI is `name`: the
    other connections of the same server must not wait for those."""

    def __init__(self, key_pem: bytes, name: str, delay: float) -> None:
        super().__init__(key_pem)
        self.name = name
        self.slow_delay = delay

    def delay_for(self, request) -> float:
        return self.slow_delay if request.server_name == self.name else 0.0


# The hash of each TLS SignatureScheme the key server and fasttls.keyless.PrivateKey sign with.
SCHEME_HASHES = {0x0403: hashes.SHA256, 0x0503: hashes.SHA384, 0x0804: hashes.SHA256,
                 0x0805: hashes.SHA384, 0x0806: hashes.SHA512, 0x0401: hashes.SHA256,
                 0x0501: hashes.SHA384, 0x0601: hashes.SHA512}


def verify_signature(public, scheme, signature, data):
    """Check `signature` over `data` for `scheme` with `cryptography`'s public key: ECDSA,
    RSA-PSS (rsa_pss_rsae_*, salt as long as the hash) or PKCS#1 v1.5. Raises
    cryptography.exceptions.InvalidSignature when it does not verify."""
    h = SCHEME_HASHES[scheme]()
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, data, ec.ECDSA(h))
    elif scheme >> 8 == 0x08:
        public.verify(signature, data, padding.PSS(padding.MGF1(h), h.digest_size), h)
    else:
        public.verify(signature, data, padding.PKCS1v15(), h)
