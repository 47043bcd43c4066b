"""fasttls: fast, secure-by-default TLS for Python, in C over the system OpenSSL.

The sans-IO API (`newctx`, `newtls`) and socket helpers in the style of skynet's
`http.tlshelper`. See docs/API.md."""
from fasttls._binding import OPENSSL_VERSION
from fasttls._context import Context, newctx
from fasttls.stdlib import SSLContext, create_default_context, extract_from_ssl, inject_into_ssl
from fasttls._errors import (KeylessError, SSLCertVerificationError, SSLEOFError, SSLError,
                             SSLZeroReturnError)
from fasttls._pause import HandshakePause
from fasttls._signing import Signer, SigningRequest
from fasttls._tls import TLS, Session, State, newtls, socket_timeout_ms
from fasttls._version import __version__
from fasttls.helpers import (
    closefunc,
    init_requestfunc,
    init_responsefunc,
    readallfunc,
    readfunc,
    writefunc,
)

__all__ = [
    "OPENSSL_VERSION",
    "Context",
    "HandshakePause",
    "KeylessError",
    "SSLContext",
    "Session",
    "Signer",
    "SigningRequest",
    "State",
    "SSLCertVerificationError",
    "SSLEOFError",
    "SSLError",
    "SSLZeroReturnError",
    "TLS",
    "__version__",
    "closefunc",
    "create_default_context",
    "extract_from_ssl",
    "inject_into_ssl",
    "init_requestfunc",
    "init_responsefunc",
    "newctx",
    "newtls",
    "readallfunc",
    "readfunc",
    "socket_timeout_ms",
    "writefunc",
]
