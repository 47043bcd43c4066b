"""`inject_into_ssl()` / `extract_from_ssl()`: make code that builds its own contexts get
fasttls's, and undo it."""
import ssl
import threading

from ._context import _StdSSLContext, _InjectedSSLContext, create_default_context

__all__ = ["inject_into_ssl", "extract_from_ssl"]

_std_create_default_context = ssl.create_default_context  # captured before any injection

_injected: dict = {}
_inject_lock = threading.Lock()


def _patch_points():
    """(module, attribute, replacement) for every place that hands out stdlib contexts."""
    points = [(ssl, "SSLContext", _InjectedSSLContext),
              (ssl, "create_default_context", create_default_context)]
    if ssl._create_default_https_context is _std_create_default_context:
        points.append((ssl, "_create_default_https_context", create_default_context))
    try:
        import urllib3.util.ssl_ as urllib3_ssl  # captured ssl.SSLContext at its import
    except ImportError:
        urllib3_ssl = None
    if urllib3_ssl is not None and getattr(urllib3_ssl, "SSLContext", None) is _StdSSLContext:
        points.append((urllib3_ssl, "SSLContext", _InjectedSSLContext))
    return points


def inject_into_ssl() -> None:
    """Make code that builds its own contexts get fasttls: `ssl.SSLContext`,
    `ssl.create_default_context`, http.client's default context and urllib3's SSLContext.
    Modules that captured `ssl.SSLContext` before this call (other than urllib3) keep the
    stdlib's; see the README."""
    with _inject_lock:
        if _injected:
            return
        for module, name, replacement in _patch_points():
            _injected[(module, name)] = getattr(module, name)
            setattr(module, name, replacement)


def extract_from_ssl() -> None:
    """Undo inject_into_ssl(): restore exactly what was there."""
    with _inject_lock:
        for (module, name), original in _injected.items():
            setattr(module, name, original)
        _injected.clear()
