"""fasttls.keyless: the key server of keyless TLS, its protocol and the edge's client.

An edge holds only the certificate; the private key stays on a key server. During a handshake
the edge sends the key server the message to sign (docs/KEYLESS.md describes the protocol) and
gets the signature back.
"""
from fasttls._signing import Signer, SigningRequest
from fasttls.keyless._client import KeylessClient
from fasttls.keyless._contexts import AllowList, client_context, server_context
from fasttls.keyless._errors import REASONS, KeylessError
from fasttls.keyless._inputs import refusal
from fasttls.keyless._keys import SCHEMES, KeyStore, PrivateKey, certificate_key_id
from fasttls.keyless._protocol import Status
from fasttls.keyless._server import KeyServer

__all__ = ["AllowList", "KeyServer", "KeylessClient", "KeylessError", "KeyStore", "PrivateKey",
           "REASONS", "SCHEMES", "Signer", "SigningRequest", "Status", "certificate_key_id",
           "client_context", "refusal", "server_context"]
