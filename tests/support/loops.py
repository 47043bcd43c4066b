"""The event loops the fasttls.aio tests run on: the stdlib's selector loop and uvloop, each
patched by fasttls.aio.patch_loop, with an exception handler that fails the test on anything
the loop reported (a callback that raised, a task never awaited)."""
import asyncio
import contextlib
import sys

import fasttls.aio
from support.requires import require_module

LOOPS = ["selector"]
if sys.platform != "win32":
    LOOPS.append("uvloop")


@contextlib.contextmanager
def patched_loop(kind):
    """A fresh loop of `kind` (one of LOOPS), patched; closed on exit, after which nothing may
    have reached its exception handler. Without uvloop installed its cases skip locally and
    fail under CI=true (the test extra installs it here)."""
    if kind == "uvloop":
        raw = require_module("uvloop").new_event_loop()
    else:
        raw = asyncio.SelectorEventLoop()
    loop = fasttls.aio.patch_loop(raw)
    errors = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    assert not errors, [e.get("message") for e in errors]
