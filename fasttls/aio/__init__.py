"""fasttls.aio: asyncio TLS through fasttls's own transport, without asyncio's `sslproto`.

    import asyncio, fasttls, fasttls.aio

    fasttls.aio.install()                      # every event loop made from now on
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # or fasttls.create_default_context()
    reader, writer = await asyncio.open_connection(host, 443, ssl=ctx)

Connections whose `ssl=` is a `fasttls.SSLContext` (the drop-in context; also what
`ssl.create_default_context()` returns after `fasttls.inject_into_ssl()`) get a transport that
makes one engine call per read or write and owns the socket itself; every other context keeps
asyncio's own path. Everything asyncio's SSL transport offers works the same: streams,
`get_extra_info` ("ssl_object" is a genuine `ssl.SSLObject`, "peercert", "cipher",
"compression", "sslcontext", "socket", "peername", "sockname"), flow control, close_notify on
close() within `ssl_shutdown_timeout`, `ssl_handshake_timeout`, certificate errors raised from
create_connection, abort(), session resumption, start_tls.

- `patch_loop(loop)`: one loop (idempotent; returns it).
- `install()` / `uninstall()`: every loop made afterwards (asyncio's selector loops, and
  uvloop's, where fasttls runs over uvloop's TCP transport).
- `loop_factory`: for `asyncio.run(main(), loop_factory=fasttls.aio.loop_factory)` and
  `asyncio.Runner(loop_factory=...)` (Python 3.12+).

`fasttls.inject_into_ssl()` is independent: it makes the `ssl` module's contexts fasttls's, so
libraries that build their own contexts (uvicorn, aiohttp) get fasttls contexts; with
`install()` as well, their connections also skip sslproto. Injection alone keeps asyncio's
sslproto over fasttls's SSLObject.
"""
from fasttls.aio._layered import SSLLayeredTransport
from fasttls.aio._loop import install, loop_factory, new_event_loop, patch_loop, uninstall
from fasttls.aio._socket import SSLSocketTransport
from fasttls.aio._transport import SSLTransport

__all__ = ["patch_loop", "install", "uninstall", "loop_factory", "new_event_loop",
           "SSLTransport", "SSLSocketTransport", "SSLLayeredTransport"]
