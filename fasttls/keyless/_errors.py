"""The causes of a failed keyless signature on the key server's link, as KeylessError reasons.

KeylessError itself is fasttls's (fasttls/_errors.py: a subclass of fasttls.SSLError with
`.reason`); these are the reasons the key server's client and its keys give it, beside the
engine's own ("SIGNER_ERROR", "BAD_SIGNATURE", ...)."""
from fasttls._errors import KeylessError

__all__ = ["KeylessError", "REASONS", "keyless_error"]

# The first six are also the key server's answers (the protocol's statuses, _protocol.Status);
# the rest arise on the edge.
REASONS = (
    "UNKNOWN_KEY_ID",   # the key server holds no key with that key id
    "REFUSED_INPUT",    # the data is not a TLS server signature input
    "BAD_SCHEME",       # the scheme is unknown or does not fit the key
    "OVERLOADED",       # the key server sheds load
    "INTERNAL",         # the key server failed (signing, a malformed request)
    "TIMEOUT",          # no answer within the request's deadline
    "CONNECTION_LOST",  # the connection to the key server ended with the request in flight
    "UNREACHABLE",      # cannot connect to the key server (refused, TLS failure, untrusted)
    "REFUSED_EDGE",     # the key server refused this edge (allow-list, certificate)
    "PROTOCOL",         # the key server's answer is not the protocol
    "CLOSED",           # the client was closed
)


def keyless_error(reason: str, message: str) -> KeylessError:
    """A KeylessError whose message names the reason too."""
    return KeylessError(f"keyless signing failed ({reason}): {message}", reason)
