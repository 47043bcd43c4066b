"""What a test needs from the machine (a peer program, an optional library): missing, it skips
locally and fails under CI=true, where every peer must be installed."""
import importlib
import os
import shutil

import pytest

IN_CI = os.environ.get("CI") == "true"


def skip_or_fail(message):
    """Skip the test with `message`; under CI=true fail it instead."""
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing requirement is a failure)")
    pytest.skip(message)


def require_program(name):
    """Path of an external peer program; a missing one skips locally and fails under CI=true."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"peer program {name!r} is not installed")
    return path


def require_module(name, extra="test"):
    """An optional Python package (of fasttls's `extra`); a missing one skips locally and fails
    under CI=true."""
    try:
        return importlib.import_module(name)
    except ImportError:
        skip_or_fail(f"the Python package {name!r} is not installed (fasttls's {extra!r} extra)")
