"""KeylessClient: the edge's one multiplexed connection to its key server.

Theory of operation. The connection lives on a private asyncio loop in a background I/O thread
(fasttls's TLS transport, the edge's client certificate). Callers on any thread (`sign`) and on
any event loop (`sign_async`) hand requests to that thread; each gets a fresh request id, its
frame is written at once, and its answer, matched by id, completes the caller's future in
whatever order answers come. Why a thread rather than a socket behind a lock: a blocking
reader would have to be elected among the callers, and one on an event loop could not be;
a thread that owns the socket serves threads and loops alike, keeps reading while every caller
waits, and a caller that gives up (deadline) leaves the connection in a good state.

- Lazy connect: the first request connects; requests made meanwhile wait for it.
- Deadlines: each request has one (its timeout, else the client's); the remaining budget is
  sent, so the key server does not sign what nobody waits for; at the deadline the caller gets
  KeylessError (reason "TIMEOUT") and a late answer is dropped.
- Loss: when the connection ends, every request in flight fails at once with
  KeylessError (reason "CONNECTION_LOST") naming the cause; the next request reconnects.
- close(): fails what is in flight ("CLOSED"), closes the connection, stops the thread.
"""
import asyncio
import concurrent.futures
import itertools
import ssl
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from fasttls.aio import new_event_loop
from fasttls.keyless._errors import KeylessError, keyless_error
from fasttls.keyless._protocol import (FrameReader, ProtocolError, Status, decode_response,
                                       encode_request)

__all__ = ["KeylessClient"]

# TLS alerts by which a key server refuses an edge's certificate during the handshake.
_REFUSAL_ALERTS = ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "ACCESS_DENIED",
                   "CERTIFICATE_UNKNOWN", "CERTIFICATE_EXPIRED", "CERTIFICATE_REVOKED",
                   "UNSUPPORTED_CERTIFICATE", "HANDSHAKE_FAILURE")


def _as_keyless_error(exc: BaseException, when: str) -> KeylessError:
    """The KeylessError for a failure of the connection itself."""
    if isinstance(exc, KeylessError):
        return exc
    reason = getattr(exc, "reason", None) or ""
    if isinstance(exc, ssl.SSLError) and "ALERT" in reason and any(
            alert in reason for alert in _REFUSAL_ALERTS):
        return keyless_error("REFUSED_EDGE", f"the key server refused this edge's certificate "
                                            f"({reason}) {when}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return keyless_error("UNREACHABLE", f"the key server's certificate failed "
                                           f"verification: {exc}")
    kind = "UNREACHABLE" if when.startswith("while connecting") else "CONNECTION_LOST"
    return keyless_error(kind, f"{type(exc).__name__}: {exc} {when}".strip())


class _Job:
    """One request, from submission to answer."""

    __slots__ = ("frame_args", "deadline", "done", "timer", "request_id")

    def __init__(self, frame_args: tuple, deadline: float,
                 done: Callable[[Optional[bytes], Optional[KeylessError]], None]) -> None:
        self.frame_args = frame_args
        self.deadline = deadline          # on the I/O loop's clock
        self.done: Optional[Callable] = done
        self.timer: Optional[asyncio.TimerHandle] = None
        self.request_id = 0

    def finish(self, signature: Optional[bytes], error: Optional[KeylessError]) -> None:
        done, self.done = self.done, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if done is not None:
            done(signature, error)


class _Link(asyncio.Protocol):
    """The connection to the key server: frames out, answers matched to their jobs."""

    def __init__(self, client: "KeylessClient") -> None:
        self.client = client
        self.transport: Optional[asyncio.Transport] = None
        self.reader = FrameReader()
        self.jobs: Dict[int, _Job] = {}
        self.error: Optional[KeylessError] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, job: _Job) -> None:
        if self.error is not None or self.transport is None:
            # Ended before this job could go (e.g. a refusal that came with the handshake).
            job.finish(None, self.error or keyless_error("CONNECTION_LOST",
                                                        "the key server closed the connection"))
            return
        job.request_id = next(self.client._ids)
        self.jobs[job.request_id] = job
        budget_ms = max(1, int((job.deadline - self.client._loop.time()) * 1000))
        key_id, scheme, server_name, data = job.frame_args
        self.transport.write(encode_request(job.request_id, budget_ms, key_id, scheme,
                                            server_name, data))

    def forget(self, job: _Job) -> None:
        self.jobs.pop(job.request_id, None)

    def data_received(self, data: bytes) -> None:
        try:
            for body in self.reader.feed(data):
                self._answer(body)
        except ProtocolError as exc:
            self.fail(keyless_error("PROTOCOL", f"the key server's answer is not the keyless "
                                               f"protocol: {exc}"))

    def _answer(self, body: bytes) -> None:
        response = decode_response(body)
        if response.id == 0:  # about the connection: every request on it fails
            try:
                reason = Status(response.status).reason
            except ValueError:
                reason = "PROTOCOL"
            self.fail(keyless_error(reason, f"the key server says: {response.message}"))
            return
        job = self.jobs.pop(response.id, None)
        if job is None:
            return  # answered after its deadline: the caller has gone
        if response.status == Status.OK:
            self.client.signatures += 1
            job.finish(response.body, None)
            return
        try:
            reason = Status(response.status).reason
        except ValueError:
            reason = "PROTOCOL"
        job.finish(None, keyless_error(reason, f"the key server says: {response.message}"))

    def fail(self, error: KeylessError) -> None:
        """End the connection; every job on it fails with `error`."""
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.abort()
        self._fail_jobs()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.error is None:
            self.error = (_as_keyless_error(exc, "with requests in flight") if exc is not None
                          else keyless_error("CONNECTION_LOST", "the key server closed the "
                                                               "connection"))
        self.transport = None
        self._fail_jobs()
        self.client._lost(self)

    def _fail_jobs(self) -> None:
        jobs, self.jobs = self.jobs, {}
        for job in jobs.values():
            job.finish(None, self.error)


class KeylessClient:
    """The edge's client of a key server: a Signer for keyless contexts.

    `context`: a fasttls.SSLContext (fasttls.keyless.client_context makes one) or a native
    fasttls.Context, with the edge's certificate, that verifies the key server. `timeout`:
    each request's deadline (seconds) when its caller gives none; `connect_timeout`: the TLS
    connection's (default: timeout). `backoff`, `max_backoff`: after a connect fails,
    requests fail at once (with that failure's reason; the message says so) for `backoff`
    seconds, doubling with each failure in a row up to `max_backoff`; a connection made
    resets it. A connection lost after it was made is retried on the next request at once.
    """

    def __init__(self, host: str, port: int, context: Any, *, timeout: float = 5.0,
                 connect_timeout: Optional[float] = None,
                 server_hostname: Optional[str] = None, backoff: float = 0.1,
                 max_backoff: float = 2.0) -> None:
        from fasttls._context import Context
        from fasttls.stdlib import SSLContext
        if isinstance(context, Context):
            # The link runs on fasttls.aio, which takes drop-in contexts: a view of this one.
            context = SSLContext._around(context)
        elif not isinstance(context, SSLContext):
            raise TypeError(f"KeylessClient needs a fasttls.SSLContext or fasttls.Context "
                            f"(see fasttls.keyless.client_context), not "
                            f"{type(context).__name__}")
        self.host, self.port, self.context = host, port, context
        self.timeout = timeout
        self.connect_timeout = connect_timeout if connect_timeout is not None else timeout
        self.server_hostname = server_hostname if server_hostname is not None else host
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: Any = None
        self._thread: Optional[threading.Thread] = None
        self._link: Optional[_Link] = None
        self._connecting: Optional["asyncio.Task[None]"] = None
        self._waiting: List[_Job] = []
        self._closed = False
        if backoff < 0 or max_backoff < backoff:
            raise ValueError("need 0 <= backoff <= max_backoff")
        self.backoff, self.max_backoff = backoff, max_backoff
        self._failures = 0  # connect attempts failed in a row
        self._retry_at = 0.0  # (the I/O loop's clock) no attempt before this
        self._last_error: Optional[KeylessError] = None
        self.connects = 0  # connections made (a reconnect counts again)
        self.connect_attempts = 0
        self.signatures = 0  # signatures the key server answered (counted on the I/O thread)

    # ---- the Signer interface ----

    def sign(self, request: Any, timeout: Optional[float] = None) -> bytes:
        """The signature for `request` (anything with .data, .scheme, .key_id, .server_name),
        blocking up to `timeout` seconds (None: the client's timeout). KeylessError on
        failure, whose .reason names the cause."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("KeylessClient.sign() called on the client's own I/O thread")
        timeout = self.timeout if timeout is None else timeout
        future: "concurrent.futures.Future[bytes]" = concurrent.futures.Future()

        def done(signature: Optional[bytes], error: Optional[KeylessError]) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(signature)  # type: ignore[arg-type]

        job = self._submit(request, timeout, done)
        try:
            # The I/O thread enforces the deadline; the margin only guards against its loss.
            return future.result(timeout + 1.0)
        except concurrent.futures.TimeoutError:
            self._abandon(job)
            raise keyless_error("TIMEOUT", f"no answer from the key server within "
                                          f"{timeout:g} s") from None

    async def sign_async(self, request: Any, timeout: Optional[float] = None) -> bytes:
        """sign(), awaited on the running loop, which it never blocks."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        timeout = self.timeout if timeout is None else timeout

        def settle(signature: Optional[bytes], error: Optional[KeylessError]) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(signature)

        def done(signature: Optional[bytes], error: Optional[KeylessError]) -> None:
            try:
                loop.call_soon_threadsafe(settle, signature, error)
            except RuntimeError:
                pass  # the caller's loop is closed: nobody waits any more

        job = self._submit(request, timeout, done)
        try:
            return await future
        except asyncio.CancelledError:
            self._abandon(job)  # e.g. the handshake it was for was aborted
            raise

    # ---- lifetime ----

    def close(self) -> None:
        """Fail what is in flight, close the connection, stop the I/O thread. Idempotent."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("KeylessClient.close() called on the client's own I/O thread")
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, loop = self._thread, self._loop
            if thread is None:
                return
            loop.call_soon_threadsafe(self._shutdown)
        thread.join(10)
        if not thread.is_alive():
            loop.close()

    def __enter__(self) -> "KeylessClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "KeylessClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    @property
    def in_flight(self) -> int:
        """Requests sent or waiting for the connection, not yet answered (read from any thread:
        a snapshot)."""
        link = self._link
        return len(self._waiting) + (len(link.jobs) if link is not None else 0)

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.transport is not None

    # ---- on the caller's thread ----

    def _submit(self, request: Any, timeout: float, done: Callable) -> _Job:
        frame_args = (bytes(request.key_id), int(request.scheme), request.server_name,
                      bytes(request.data))
        if len(frame_args[0]) != 32:
            raise keyless_error("INTERNAL", "a key id is 32 bytes")
        submitted = time.monotonic()
        job = _Job(frame_args, 0.0, done)
        with self._lock:
            if self._closed:
                raise keyless_error("CLOSED", "the KeylessClient is closed")
            if self._thread is None:
                self._start_thread()
            # Under the lock: close() schedules its shutdown after every job handed over, so
            # each one is answered (if only with "closed"), none is left unanswered.
            self._loop.call_soon_threadsafe(self._start, job, submitted, timeout)
        return job

    def _abandon(self, job: _Job) -> None:
        """The caller stopped waiting (cancelled): forget the job, answer or not."""
        with self._lock:
            if not self._closed and self._loop is not None:
                self._loop.call_soon_threadsafe(self._drop, job)

    def _start_thread(self) -> None:
        self._loop = new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(ready.set)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"keyless-{self.host}:{self.port}",
                                        daemon=True)
        self._thread.start()
        ready.wait(10)

    # ---- on the I/O thread ----

    def _start(self, job: _Job, submitted: float, timeout: float) -> None:
        loop = self._loop
        remaining = timeout - (time.monotonic() - submitted)
        job.deadline = loop.time() + remaining
        if job.done is None:
            return  # abandoned already
        if self._closed:
            job.finish(None, keyless_error("CLOSED", "the KeylessClient is closed"))
            return
        if remaining <= 0:
            job.finish(None, keyless_error("TIMEOUT", f"deadline of {timeout:g} s passed "
                                                     "before the request was sent"))
            return
        job.timer = loop.call_at(job.deadline, self._expire, job, timeout)
        link = self._link
        if link is not None and link.transport is not None and link.error is None:
            link.send(job)
            return
        if self._connecting is None and loop.time() < self._retry_at:
            # Backing off after a failed connect: fail at once rather than knock on every
            # request (a fleet of edges would hammer a key server that is coming back up).
            assert self._last_error is not None
            job.finish(None, keyless_error(self._last_error.reason or "UNREACHABLE",
                                           f"not reconnecting for another "
                                           f"{self._retry_at - loop.time():.2f} s after "
                                           f"{self._failures} failed attempts; last: "
                                           f"{self._last_error}"))
            return
        self._waiting.append(job)
        if self._connecting is None:
            self._connecting = loop.create_task(self._connect())

    def _drop(self, job: _Job) -> None:
        job.done = None
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        if self._link is not None:
            self._link.forget(job)
        if job in self._waiting:
            self._waiting.remove(job)

    def _expire(self, job: _Job, timeout: float) -> None:
        job.timer = None
        if self._link is not None:
            self._link.forget(job)
        if job in self._waiting:
            self._waiting.remove(job)
            why = "while connecting to the key server"
        else:
            why = "from the key server"
        job.finish(None, keyless_error("TIMEOUT", f"no answer within {timeout:g} s {why}"))

    async def _connect(self) -> None:
        loop = self._loop
        self.connect_attempts += 1
        try:
            _, link = await asyncio.wait_for(
                loop.create_connection(lambda: _Link(self), self.host, self.port,
                                       ssl=self.context, server_hostname=self.server_hostname,
                                       ssl_handshake_timeout=self.connect_timeout),
                self.connect_timeout)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if isinstance(exc, asyncio.TimeoutError):
                error = keyless_error("TIMEOUT", f"cannot connect to the key server "
                                                f"{self.host}:{self.port} within "
                                                f"{self.connect_timeout:g} s")
            else:
                error = _as_keyless_error(exc, f"while connecting to {self.host}:{self.port}")
            self._connecting = None
            self._failures += 1
            self._last_error = error
            self._retry_at = loop.time() + self._backoff_after(self._failures)
            waiting, self._waiting = self._waiting, []
            for job in waiting:
                job.finish(None, error)
            return
        self._connecting = None
        self._failures, self._retry_at, self._last_error = 0, 0.0, None
        self.connects += 1
        if link.error is None and link.transport is not None:
            self._link = link  # else it ended already: the jobs below fail with its error
        waiting, self._waiting = self._waiting, []
        for job in waiting:
            if job.done is not None:
                link.send(job)

    def _backoff_after(self, failures: int) -> float:
        """Seconds without a connect attempt after `failures` failed ones in a row."""
        return min(self.max_backoff, self.backoff * 2 ** min(failures - 1, 32))

    def _lost(self, link: _Link) -> None:
        if self._link is link:
            self._link = None

    def _shutdown(self) -> None:
        error = keyless_error("CLOSED", "the KeylessClient was closed")
        if self._connecting is not None:
            self._connecting.cancel()
        waiting, self._waiting = self._waiting, []
        for job in waiting:
            job.finish(None, error)
        link = self._link
        if link is not None:
            link.fail(error)
        # Let the transport's close and the cancelled connect run, then stop.
        self._loop.call_later(0.05, self._loop.stop)
