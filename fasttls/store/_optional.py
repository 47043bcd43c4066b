"""The optional client libraries of the store backends, imported when a backend is made."""
import importlib
from typing import Any

__all__ = ["require"]


def require(module: str, backend: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{backend} needs the {package!r} package: pip install "
                          f"'fasttls[store]' (or {package})") from exc
