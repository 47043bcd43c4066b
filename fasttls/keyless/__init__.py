"""fasttls.keyless: the key server of keyless TLS, its protocol and the edge's client.

An edge holds only the certificate; the private key stays on a key server. During a handshake
the edge sends the key server the message to sign (docs/KEYLESS.md describes the protocol) and
gets the signature back.
"""
from fasttls.keyless._errors import REASONS, KeylessError
from fasttls.keyless._keys import SCHEMES, KeyStore, PrivateKey, certificate_key_id

# TODO(lead): once branch `keyless` is merged, re-export the engine side's types here:
#   from fasttls._signing import Signer, SigningRequest
#   from fasttls._errors import KeylessError   (and drop fasttls/keyless/_errors.py's class)

__all__ = ["KeylessError", "KeyStore", "PrivateKey", "REASONS", "SCHEMES",
           "certificate_key_id"]
