"""KeyServer: answers edges' signing requests over mutual TLS, on asyncio with fasttls.aio.

Theory of operation. One asyncio loop accepts edges (fasttls's TLS transport, client
certificates required from the edge CA) and checks each edge's identity against the allow-list
when its handshake is done; a refused edge gets a REFUSED_EDGE frame and is disconnected. Each
request is checked (key id known, scheme fits the key, the data is a TLS server signature
input: fasttls.keyless._inputs) before anything is signed, and answered with its own id as soon
as it is signed, in whatever order signatures finish.

Where signing runs: ECDSA signatures (about 25 µs for P-256 here) are made inline on the loop,
because handing one to a thread and back costs more than the signature itself (inline was ahead
in every paired run of `python -m fasttls bench --keyless`: docs/KEYLESS.md); RSA signatures
(about 0.45 ms for 2048 bits) go to a thread pool, where the GIL is released while OpenSSL
works, so they use every core and never stall the loop. `signing="inline"` or `"threads"` makes
one choice for every key instead ("auto", the default, chooses by key type).

Budgets: a request carries how long the edge will wait; one still queued when its budget runs
out is answered EXPIRED instead of signed (the edge has given up on it). At most `max_pending`
requests wait at once; more are answered OVERLOADED at once rather than queued.
"""
import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from typing import Any, Dict, Iterable, Optional, Set, Union

from fasttls.aio import new_event_loop, patch_loop
from fasttls.keyless._contexts import AllowList, require_client_certificates
from fasttls.keyless._errors import KeylessError
from fasttls.keyless._inputs import refusal
from fasttls.keyless._keys import SCHEMES, KeyStore, PrivateKey
from fasttls.keyless._protocol import (FrameReader, ProtocolError, Request, Status,
                                       decode_request, encode_response)

__all__ = ["KeyServer"]

log = logging.getLogger("fasttls.keyless")

# How long a refused edge's connection stays open after the refusal is sent, so the edge reads
# it before the connection ends (closing at once with its requests unread would send a reset,
# which can destroy the refusal in flight).
REFUSAL_LINGER = 2.0
_SIGNING = {"auto": None, "inline": True, "threads": False}
HANDSHAKE_TIMEOUT = 10.0


class KeyServer:
    """A key server. `keys`: a KeyStore or PrivateKeys; `context`: a fasttls.SSLContext that
    requires client certificates (fasttls.keyless.server_context makes one); `allow`: the edge
    identities answered (DNS names / CNs, or "sha256:HEX" fingerprints of their certificates).
    `workers`: signing threads; `max_pending`: requests waiting before OVERLOADED; `signing`:
    "auto", "inline" or "threads" (see the module's comment); `answer_delay`: seconds to hold
    every answer back, to stand in for a distant key server in tests and demonstrations.

        server = KeyServer(keys, ctx, ["edge1.example"], port=7000)
        await server.start()         # on a running loop; or server.start_thread()
        ...
        await server.close()         # or server.stop_thread()
    """

    def __init__(self, keys: Union[KeyStore, Iterable[PrivateKey]], context: Any,
                 allow: Iterable[str], *, host: str = "127.0.0.1", port: int = 0,
                 workers: Optional[int] = None, max_pending: int = 4096,
                 signing: str = "auto", answer_delay: float = 0.0) -> None:
        require_client_certificates(context)
        if signing not in _SIGNING:
            raise ValueError(f"signing={signing!r}: expected one of {', '.join(_SIGNING)}")
        self.keys = keys if isinstance(keys, KeyStore) else KeyStore(keys)
        if not len(self.keys):
            raise ValueError("the key server has no keys")
        self.context = context
        self.allow = AllowList(allow)
        self.host, self.port = host, port
        self.max_pending = max_pending
        self.answer_delay = answer_delay
        self._inline = _SIGNING[signing]
        self._workers = workers or min(8, os.cpu_count() or 1)
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._connections: Set["_EdgeConnection"] = set()
        self._thread: Optional[threading.Thread] = None
        self.pending = 0
        # Answers sent, by status name, and edges refused: for tests and monitoring.
        self.stats: Dict[str, int] = {status.name: 0 for status in Status}
        self.stats["edges_refused"] = 0

    def reload_keys(self) -> int:
        """Read the signing keys again from the files and directories they were loaded from
        (KeyStore.reloaded; the CLI does this on SIGHUP) and answer with the new set from the
        next request on; requests already being signed finish with the key they have. A file
        that fails to load raises (OSError, fasttls.SSLError or KeylessError naming it) and
        the keys in use stay as they were. Returns the number of keys now held. Call it on the
        server's loop (or before start); a swap of one reference, so it is safe anywhere."""
        fresh = self.keys.reloaded()
        if not len(fresh):
            raise ValueError("reloading left the key server without keys: keeping the old ones")
        self.keys = fresh
        log.info("reloaded %d signing keys", len(fresh))
        return len(fresh)

    # ---- running on the caller's loop ----

    async def start(self) -> None:
        """Listen (on the running loop, which is made to use fasttls's TLS transport)."""
        self._loop = patch_loop(asyncio.get_running_loop())
        self._pool = concurrent.futures.ThreadPoolExecutor(self._workers,
                                                           thread_name_prefix="keyserver-sign")
        self._server = await self._loop.create_server(
            lambda: _EdgeConnection(self), self.host, self.port, ssl=self.context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("key server listening on %s:%d with %d keys", self.host, self.port,
                 len(self.keys))

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening, disconnect every edge, wait for signatures under way."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)

    async def __aenter__(self) -> "KeyServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---- running on a thread of its own ----

    def start_thread(self) -> "KeyServer":
        """Run the server on a loop in a daemon thread; return once it listens."""
        started: "concurrent.futures.Future[None]" = concurrent.futures.Future()
        loop = new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                started.set_exception(exc)
                loop.close()
                return
            started.set_result(None)
            loop.run_forever()
            loop.run_until_complete(self.close())
            loop.close()

        self._thread = threading.Thread(target=run, name="keyserver", daemon=True)
        self._thread.start()
        started.result(timeout=30)
        return self

    def stop_thread(self, timeout: float = 10.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError("the key server thread did not stop")

    # ---- answering ----

    def _signs_inline(self, key: PrivateKey) -> bool:
        return self._inline if self._inline is not None else key.key_type != "rsa"

    def handle(self, conn: "_EdgeConnection", body: bytes) -> None:
        try:
            request = decode_request(body)
        except ProtocolError as exc:
            request_id = exc.args[1] if len(exc.args) > 1 else 0
            conn.answer(request_id, Status.INTERNAL, f"malformed request: {exc.args[0]}")
            if request_id == 0:
                conn.close()
            return
        received = time.monotonic()
        key = self.keys.get(request.key_id)
        if key is None:
            conn.answer(request.id, Status.UNKNOWN_KEY,
                        f"no key with key id {request.key_id.hex()}")
            return
        if not key.fits(request.scheme):
            name = SCHEMES.get(request.scheme, f"0x{request.scheme:04x}")
            conn.answer(request.id, Status.BAD_SCHEME,
                        f"signature scheme {name} does not fit the {key.key_type} key")
            return
        why = refusal(request.payload, request.scheme)
        if why is not None:
            log.warning("refused to sign for %s: %s", conn.identity, why)
            conn.answer(request.id, Status.REFUSED_INPUT, why)
            return
        if self.pending >= self.max_pending:
            conn.answer(request.id, Status.OVERLOADED,
                        f"{self.pending} requests already in flight")
            return
        deadline = received + request.budget_ms / 1000
        if self._signs_inline(key):
            conn.answer(*_sign(key, request, deadline))
            return
        assert self._pool is not None and self._loop is not None
        self.pending += 1
        future = self._loop.run_in_executor(self._pool, _sign, key, request, deadline)
        future.add_done_callback(lambda f: self._signed(conn, request, f))

    def _signed(self, conn: "_EdgeConnection", request: Request, future: "asyncio.Future") -> None:
        self.pending -= 1
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            conn.answer(request.id, Status.INTERNAL, f"signing failed: {exc}")
        else:
            conn.answer(*future.result())


def _sign(key: PrivateKey, request: Request, deadline: float) -> "tuple[int, Status, Any]":
    """(id, status, signature or message): a request checked in every other way."""
    if time.monotonic() >= deadline:  # so a budget of 0 is always spent
        return request.id, Status.EXPIRED, "the request's budget ran out before signing"
    try:
        return request.id, Status.OK, key.sign(request.scheme, request.payload)
    except KeylessError as exc:
        return request.id, Status.BAD_SCHEME, str(exc)
    except Exception as exc:  # an OpenSSL failure: the edge is told, the server keeps going
        log.exception("signing failed")
        return request.id, Status.INTERNAL, f"signing failed: {exc}"


class _EdgeConnection(asyncio.Protocol):
    """One edge's connection: frames in, answers out."""

    def __init__(self, server: KeyServer) -> None:
        self.server = server
        self.transport: Optional[asyncio.Transport] = None
        self.reader = FrameReader()
        self.identity = "?"
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        allowed, self.identity = self.server.allow.check(transport.get_extra_info("peercert"),
                                                         der)
        self.server._connections.add(self)
        if not allowed:
            self.refused = True
            self.server.stats["edges_refused"] += 1
            log.warning("refused edge %s: not on the allow-list", self.identity)
            self.answer(0, Status.REFUSED_EDGE,
                        f"edge {self.identity} is not on the key server's allow-list")
            asyncio.get_running_loop().call_later(REFUSAL_LINGER, self.abort)
            return
        log.info("edge %s connected", self.identity)

    # Back-pressure: an edge that does not read its answers stops being read, so answers
    # cannot pile up in the write buffer without bound.
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        try:
            frames = self.reader.feed(data)
        except ProtocolError as exc:
            self.answer(0, Status.INTERNAL, f"malformed stream: {exc}")
            self.close()
            return
        for body in frames:
            self.server.handle(self, body)

    def eof_received(self) -> bool:
        return False  # close: an edge that stops sending wants no more answers

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.server._connections.discard(self)
        self.transport = None

    def answer(self, request_id: int, status: Status, body: Union[bytes, str] = b"") -> None:
        self.server.stats[status.name] += 1
        data = body.encode("utf-8") if isinstance(body, str) else body
        frame = encode_response(request_id, status, data)
        if self.server.answer_delay and request_id != 0:
            asyncio.get_running_loop().call_later(self.server.answer_delay, self._write, frame)
        else:
            self._write(frame)

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
