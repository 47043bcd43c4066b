"""The drop-in for the stdlib `ssl` module: `SSLContext` (a real `ssl.SSLContext` subclass whose
SSLSocket/SSLObject run on fasttls), `create_default_context`, and injection."""
from ._context import SSLContext, create_default_context
from ._inject import extract_from_ssl, inject_into_ssl

__all__ = ["SSLContext", "create_default_context", "extract_from_ssl", "inject_into_ssl"]
