"""KeylessError: every failure of a keyless signature, with `.reason` naming the cause.

TODO(lead): the engine side (branch `keyless`) adds `KeylessError(SSLError)` to
fasttls/_errors.py. When it is merged, replace this class by
`from fasttls._errors import KeylessError` (keeping the (reason, message) call form below, or
adapting the few `KeylessError(...)` calls in this package)."""
import ssl
from typing import Any

from fasttls._errors import SSLError

__all__ = ["KeylessError", "REASONS"]

# The causes, as `.reason` gives them. The first six are also the key server's answers (the
# protocol's status codes); the rest arise on the edge.
REASONS = (
    "unknown_key",      # the key server holds no key with that key id
    "refused_input",    # the data is not a TLS server signature input
    "bad_scheme",       # the scheme is unknown or does not fit the key
    "overloaded",       # the key server sheds load
    "internal",         # the key server failed (signing, a malformed request)
    "timeout",          # no answer within the request's deadline
    "connection_lost",  # the connection to the key server ended with the request in flight
    "unreachable",      # cannot connect to the key server
    "refused_edge",     # the key server refused this edge's certificate (mutual TLS)
    "protocol",         # the key server's answer is not the protocol
    "closed",           # the client was closed
)


class KeylessError(SSLError):
    """A keyless signature failed; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(ssl.SSL_ERROR_SSL, f"keyless signing failed ({reason}): {message}")
        self.reason = reason
        self.detail = message
        self.library = "KEYLESS"

    def __reduce__(self) -> "tuple[Any, tuple[Any, Any]]":
        # OSError's own pickling would call __init__ with (errno, text): rebuild from ours.
        return (type(self), (self.reason, self.detail))


KeylessError.__module__ = "fasttls.keyless"
