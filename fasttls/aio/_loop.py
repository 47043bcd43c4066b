"""How event loops come to use fasttls's TLS transport.

Selector loops (asyncio's default on Unix) make every TLS connection through one method,
`_make_ssl_transport` (create_connection with or without sock=, create_server and start_server,
the unix variants, connect_accepted_socket); `start_tls` makes its own. Both are replaced: a
fasttls.SSLContext gets `SSLSocketTransport` (or `SSLLayeredTransport` for start_tls, whose
transport already owns the socket); any other context goes to asyncio's own code, unchanged.

uvloop does TLS inside its C code, so its public methods are wrapped instead: with a
fasttls.SSLContext, the connection is opened without ssl and `SSLLayeredTransport` runs over
uvloop's TCP (or unix) transport.

`patch_loop(loop)` changes one loop (instance attributes); `install()` changes the loop classes,
so every loop made afterwards, however it is made, uses fasttls; `uninstall()` undoes it.
"""
import asyncio
import functools
import ssl
from asyncio import selector_events
from typing import Any, Callable, Dict, Optional

from fasttls.aio._layered import SSLLayeredTransport
from fasttls.aio._socket import SSLSocketTransport
from fasttls.aio._transport import check_timeouts, default_context

_PATCHED = "_fasttls_aio"


def _is_fasttls(context) -> bool:
    from fasttls.stdlib import SSLContext
    return isinstance(context, SSLContext)


def _timeouts(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    return {name: kwargs[name] for name in ("ssl_handshake_timeout", "ssl_shutdown_timeout")
            if kwargs.get(name) is not None}


# ---- selector loops ----

_SELECTOR = selector_events.BaseSelectorEventLoop
_ORIGINAL_MAKE_SSL_TRANSPORT = _SELECTOR._make_ssl_transport  # type: ignore[attr-defined]
_ORIGINAL_START_TLS = asyncio.BaseEventLoop.start_tls


def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *, server_side=False,
                        server_hostname=None, extra=None, server=None, **timeouts):
    context = sslcontext if sslcontext is not None else default_context(server_side,
                                                                        server_hostname)
    if not _is_fasttls(context):
        return _ORIGINAL_MAKE_SSL_TRANSPORT(self, rawsock, protocol, sslcontext, waiter,
                                            server_side=server_side,
                                            server_hostname=server_hostname, extra=extra,
                                            server=server, **timeouts)
    self._ensure_fd_no_transport(rawsock)
    return SSLSocketTransport(self, rawsock, protocol, context, waiter, server_side=server_side,
                              server_hostname=server_hostname, extra=extra, server=server,
                              **_timeouts(timeouts))


async def _start_tls_layered(loop, transport, protocol, sslcontext, server_side,
                             server_hostname, timeouts):
    """start_tls with fasttls: as asyncio's, with SSLLayeredTransport for SSLProtocol."""
    waiter = loop.create_future()
    tls = SSLLayeredTransport(loop, protocol, sslcontext, waiter, server_side=server_side,
                              server_hostname=server_hostname, call_connection_made=False,
                              **_timeouts(timeouts))
    # Paused first, so no data reaches the new protocol before its connection_made.
    transport.pause_reading()
    transport.set_protocol(tls.lower_protocol)
    made = loop.call_soon(tls.lower_protocol.connection_made, transport)
    resumed = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        made.cancel()
        resumed.cancel()
        raise
    return tls


async def _start_tls(self, transport, protocol, sslcontext, *, server_side=False,
                     server_hostname=None, **timeouts):
    if not _is_fasttls(sslcontext):
        return await _ORIGINAL_START_TLS(self, transport, protocol, sslcontext,
                                         server_side=server_side,
                                         server_hostname=server_hostname, **timeouts)
    if not getattr(transport, "_start_tls_compatible", False):
        raise TypeError(f"transport {transport!r} is not supported by start_tls()")
    check_timeouts(timeouts.get("ssl_handshake_timeout"), timeouts.get("ssl_shutdown_timeout"))
    return await _start_tls_layered(self, transport, protocol, sslcontext, server_side,
                                    server_hostname, timeouts)


_SELECTOR_METHODS: Dict[str, Callable] = {"_make_ssl_transport": _make_ssl_transport,
                                          "start_tls": _start_tls}


# ---- uvloop (and any loop with its own TLS): its public methods, wrapped ----

def _opener(name: str, original: Callable, server_side: bool) -> Callable:
    """`original` (create_connection, create_server, ...) with a fasttls context: opened
    without TLS, each connection's protocol wrapped in a SSLLayeredTransport."""

    @functools.wraps(original)
    async def open_(self, protocol_factory, *args, ssl=None, server_hostname=None,
                    ssl_handshake_timeout=None, ssl_shutdown_timeout=None, **kwargs):
        context = ssl
        if ssl is True:
            context = default_context(server_side, server_hostname)
        if not _is_fasttls(context):
            extra = {key: value for key, value in (
                ("server_hostname", server_hostname),
                ("ssl_handshake_timeout", ssl_handshake_timeout),
                ("ssl_shutdown_timeout", ssl_shutdown_timeout)) if value is not None}
            return await original(self, protocol_factory, *args, ssl=ssl, **extra, **kwargs)
        check_timeouts(ssl_handshake_timeout, ssl_shutdown_timeout)
        timeouts = {"ssl_handshake_timeout": ssl_handshake_timeout,
                    "ssl_shutdown_timeout": ssl_shutdown_timeout}
        if not server_side and server_hostname is None:
            host = args[0] if args else kwargs.get("host")
            if name == "create_connection" and host:
                server_hostname = host
            else:
                raise ValueError("You must set server_hostname when using ssl without a host")
        serving = name in ("create_server", "create_unix_server")
        waiter = None if serving else self.create_future()
        made: "list[SSLLayeredTransport]" = []

        def factory():
            tls = SSLLayeredTransport(self, protocol_factory(), context, waiter,
                                      server_side=server_side,
                                      server_hostname=None if server_side else server_hostname,
                                      **_timeouts(timeouts))
            if not serving:
                made.append(tls)  # the one connection to return (a server keeps none)
            return tls.lower_protocol

        result = await original(self, factory, *args, **kwargs)
        if waiter is None:
            return result  # a server: each connection's handshake runs on its own
        transport = result[0]
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return made[0], made[0].get_protocol()

    return open_


_OPENERS = {"create_connection": False, "create_unix_connection": False,
            "create_server": True, "create_unix_server": True,
            "connect_accepted_socket": True}


def _start_tls_wrapper(original: Callable) -> Callable:
    @functools.wraps(original)
    async def start_tls(self, transport, protocol, sslcontext, *, server_side=False,
                        server_hostname=None, **timeouts):
        if not _is_fasttls(sslcontext):
            return await original(self, transport, protocol, sslcontext,
                                  server_side=server_side, server_hostname=server_hostname,
                                  **timeouts)
        check_timeouts(timeouts.get("ssl_handshake_timeout"),
                       timeouts.get("ssl_shutdown_timeout"))
        return await _start_tls_layered(self, transport, protocol, sslcontext, server_side,
                                        server_hostname, timeouts)

    return start_tls


def _wrapping_methods(cls) -> Dict[str, Callable]:
    methods: Dict[str, Callable] = {
        name: _opener(name, getattr(cls, name), server_side)
        for name, server_side in _OPENERS.items() if hasattr(cls, name)}
    methods["start_tls"] = _start_tls_wrapper(getattr(cls, "start_tls"))
    return methods


def _methods_for(cls) -> Dict[str, Callable]:
    if issubclass(cls, _SELECTOR):
        return _SELECTOR_METHODS
    return _wrapping_methods(cls)


# ---- the public functions ----

def patch_loop(loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    """Make `loop` use fasttls's TLS transport for fasttls.SSLContext connections (other
    contexts keep asyncio's, or uvloop's, own). Idempotent; returns the loop."""
    if vars(loop).get(_PATCHED):  # the instance's own: install() marks the classes
        return loop
    for name, method in _methods_for(type(loop)).items():
        setattr(loop, name, method.__get__(loop))
    setattr(loop, _PATCHED, True)
    return loop


_installed: Dict[type, Dict[str, Any]] = {}


def _loop_classes() -> "list[type]":
    classes: "list[type]" = [_SELECTOR]
    try:
        import uvloop
    except ImportError:
        pass
    else:
        classes.append(uvloop.Loop)
    return classes


def install() -> None:
    """Every event loop made from now on (asyncio's selector loops, uvloop's loops) uses
    fasttls's TLS transport for fasttls.SSLContext connections. Idempotent."""
    for cls in _loop_classes():
        if cls in _installed:
            continue
        methods = _methods_for(cls)
        _installed[cls] = {name: cls.__dict__.get(name) for name in methods}
        for name, method in methods.items():
            setattr(cls, name, method)
        setattr(cls, _PATCHED, True)


def uninstall() -> None:
    """Undo install() (loops patched with patch_loop stay patched)."""
    for cls, saved in _installed.items():
        for name, method in saved.items():
            if method is None:
                delattr(cls, name)
            else:
                setattr(cls, name, method)
        delattr(cls, _PATCHED)
    _installed.clear()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop (the current policy's) patched with patch_loop: the loop factory for
    `asyncio.run(main(), loop_factory=fasttls.aio.loop_factory)` and `asyncio.Runner`."""
    return patch_loop(asyncio.new_event_loop())


loop_factory = new_event_loop
