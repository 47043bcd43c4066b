"""OCSPStapler: keep a server Context stapled with a fresh, checked OCSP response.

For each certificate the context serves (one per key type), the request is built in C for it
and its issuer (from the context's chain, else its trust store), POSTed with the stdlib's urllib
to the responder the certificate names (authorityInfoAccess), checked in C exactly as a client
in require mode checks it (signed by the issuer or its delegated responder, status good, within
thisUpdate/nextUpdate), and stapled for that certificate (Context._staple). A refresher thread (optional) fetches the next one
halfway through the current one's validity, retries failures, and withdraws a staple that
expired rather than keep sending it."""
import socket
import threading
import time
import urllib.error
import urllib.request
import weakref
from typing import Any, Callable, Optional

from fasttls._binding import ffi, lib
from fasttls._certinfo import _uris, certificate_der
from fasttls._context import Context
from fasttls._errors import OCSP_CAUSES, OCSP_MESSAGES, OCSPError

__all__ = ["OCSPStapler", "OCSPError"]

# Responses are a few kilobytes; a responder that sends more is not one.
MAX_RESPONSE = 1 << 20
# No nextUpdate (the responder always has fresh status): fetch again this often.
DEFAULT_INTERVAL = 3600.0


def _error(cause: str, message: str) -> OCSPError:
    exc = OCSPError(1, message)  # errno: ssl.SSL_ERROR_SSL
    exc.cause = cause
    return exc


def _native(context: Any) -> Context:
    """The fasttls Context of a native Context or of a drop-in fasttls.SSLContext."""
    native = getattr(context, "_fasttls", context)
    if not isinstance(native, Context):
        raise TypeError("context must be a fasttls Context or fasttls.SSLContext")
    return native


class OCSPStapler:
    """Fetches, checks and staples the OCSP response for each certificate `context` serves.

    `responder_url` overrides the certificates' own OCSP URL; `timeout` bounds each HTTP
    exchange (seconds); `retry_interval` is the wait after a failed refresh; `min_interval` and
    `max_interval` bound the wait between refreshes (by default 1 minute and 1 hour: a
    responder's status can change before nextUpdate); `on_error(exc)` is called (in the
    refresher thread) for every failed background refresh. Use `refresh()` once to staple now
    (it raises OCSPError), then `start()` for the refresher thread, `stop()` to end it (or use
    it as a context manager)."""

    def __init__(self, context: Any, *, responder_url: Optional[str] = None,
                 timeout: float = 10.0, retry_interval: float = 60.0,
                 min_interval: float = 60.0, max_interval: float = DEFAULT_INTERVAL,
                 on_error: Optional[Callable[[OCSPError], None]] = None) -> None:
        self._context = _native(context)
        self._responder_url = responder_url
        self.timeout = float(timeout)
        self.retry_interval = float(retry_interval)
        self.min_interval = float(min_interval)
        self.max_interval = float(max_interval)
        self.on_error = on_error
        # Per certificate served (its DER): the DER response stapled, (thisUpdate, nextUpdate).
        self.responses: "dict[bytes, bytes]" = {}
        self._times: "dict[bytes, tuple[float, Optional[float]]]" = {}
        self.last_error: Optional[OCSPError] = None
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ---- one refresh ----

    def _identities(self) -> "list[tuple[Any, Any]]":
        """(certificate, issuer) X509s of each identity the context serves."""
        ctx = self._context
        with ctx._lock:  # set_cert frees the certificates being read
            found = ctx._identity_certificates()
        if not found:
            raise _error("no certificate", "the context has no certificate to staple for")
        return found

    def responder_url(self, leaf=None) -> str:
        """The URL the request goes to: the one given, else the certificate's first http(s)
        OCSP responder (authorityInfoAccess). OCSPError("no responder") if there is none."""
        if self._responder_url is not None:
            return self._responder_url
        if leaf is None:
            leaf = self._identities()[0][0]
        urls = [u for u in _uris(leaf, lib.FASTTLS_URI_OCSP) or ()
                if u.lower().startswith(("http://", "https://"))]
        if not urls:
            raise _error("no responder", "the certificate names no http(s) OCSP responder "
                         "(authorityInfoAccess OCSP); pass responder_url=")
        return urls[0]

    def _fetch_one(self, leaf, issuer) -> "tuple[bytes, float, Optional[float]]":
        if issuer == ffi.NULL:
            raise _error("no issuer", "the issuer of the context's certificate is not in its "
                         "chain nor in its trust store: no OCSP request can name it")
        url = self.responder_url(leaf)
        buf = ffi.new("unsigned char[]", 4096)
        n = lib.fasttls_ocsp_request(leaf, issuer, buf, len(buf))
        if n < 0:
            raise _error("malformed", "cannot build the OCSP request")
        der = _post(url, bytes(ffi.buffer(buf, n)), self.timeout)
        this_update = ffi.new("int64_t *")
        next_update = ffi.new("int64_t *")
        result = lib.fasttls_ocsp_check(der, len(der), leaf, issuer, this_update, next_update)
        if result != lib.FASTTLS_OCSP_GOOD:
            raise _error(OCSP_CAUSES.get(result, "malformed"),
                         f"{OCSP_MESSAGES.get(result, 'bad OCSP response')} (from {url})")
        return der, float(this_update[0]), float(next_update[0]) or None

    def fetch(self) -> "tuple[bytes, float, Optional[float]]":
        """Fetch and check a response for the context's (first) certificate, without stapling
        it: (DER, thisUpdate, nextUpdate or None). Raises OCSPError naming the cause."""
        return self._fetch_one(*self._identities()[0])

    def refresh(self) -> bytes:
        """Fetch, check and staple a new response for each certificate the context serves
        (one per key type); returns the first one's. On a failure raises OCSPError, after
        stapling the others, and keeps that certificate's current staple while it is valid."""
        with self._refresh_lock:
            failure: Optional[OCSPError] = None
            for leaf, issuer in self._identities():
                key = bytes(certificate_der(leaf))
                try:
                    der, this_update, next_update = self._fetch_one(leaf, issuer)
                except OCSPError as exc:
                    failure = failure or exc
                    self._withdraw_if_expired(key, leaf)
                    continue
                self._context._staple(leaf, der)
                self.responses[key] = der
                self._times[key] = (this_update, next_update)
            self.last_error = failure
            if failure is not None:
                raise failure
            return self.response  # type: ignore[return-value]  # set above

    def _withdraw_if_expired(self, key: bytes, leaf) -> None:
        """Never staple a response past its nextUpdate: clients in require mode would refuse
        it, and others would be told something stale."""
        times = self._times.get(key)
        if times is not None and times[1] is not None and time.time() >= times[1]:
            self._context._staple(leaf, None)
            del self.responses[key], self._times[key]

    @property
    def response(self) -> Optional[bytes]:
        """The DER response stapled for the context's first certificate, or None."""
        return next(iter(self.responses.values()), None)

    @property
    def this_update(self) -> Optional[float]:
        """The earliest thisUpdate of the responses stapled (seconds since the epoch)."""
        return min((t for t, _ in self._times.values()), default=None)

    @property
    def next_update(self) -> Optional[float]:
        """The earliest nextUpdate of the responses stapled, or None (none has one)."""
        return min((n for _, n in self._times.values() if n is not None), default=None)

    def refresh_delay(self) -> float:
        """Seconds until the refresher fetches again: halfway from thisUpdate to nextUpdate
        (the earliest of the certificates'), within [min_interval, max_interval]
        (max_interval without a nextUpdate), or retry_interval after a failure or with nothing
        stapled."""
        if not self.responses or self.last_error is not None:
            return self.retry_interval
        halfway = [t + (n - t) / 2 for t, n in self._times.values() if n is not None]
        if not halfway:
            return self.max_interval
        return min(self.max_interval, max(self.min_interval, min(halfway) - time.time()))

    # ---- the refresher thread ----

    def start(self) -> "OCSPStapler":
        """Start the refresher thread (a daemon): it fetches at once if nothing is stapled,
        then as refresh_delay() says. Idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return self
        # A fresh event per thread; the thread holds the stapler weakly, and a stapler dropped
        # without stop() sets its event when collected, which ends the thread at once.
        self._stop = threading.Event()
        weakref.finalize(self, self._stop.set)
        self._thread = threading.Thread(target=_refresher, args=(weakref.ref(self), self._stop),
                                        name="fasttls-ocsp-stapler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop the refresher thread and wait for it (at most `timeout` seconds, plus the HTTP
        exchange in progress, itself bounded by self.timeout). The staple stays in place."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "OCSPStapler":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _refresher(ref: "weakref.ref[OCSPStapler]", stop: threading.Event) -> None:
    stapler = ref()
    delay = 0.0 if stapler is None or stapler.response is None else stapler.refresh_delay()
    del stapler
    while not stop.wait(delay):
        stapler = ref()
        if stapler is None:
            return
        try:
            stapler.refresh()
        except OCSPError as exc:
            if stapler.on_error is not None:
                try:
                    stapler.on_error(exc)
                except Exception:  # the application's handler: never the end of the thread
                    pass
        delay = stapler.refresh_delay()
        del stapler


def _post(url: str, request: bytes, timeout: float) -> bytes:
    """POST the request (RFC 6960 appendix A); the response body. OCSPError "http" or
    "timeout" when the responder cannot be had."""
    if not url.lower().startswith(("http://", "https://")):
        raise _error("http", f"OCSP responder URL {url!r} is not http(s)")
    req = urllib.request.Request(url, data=request, method="POST", headers={
        "Content-Type": "application/ocsp-request", "Accept": "application/ocsp-response"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read(MAX_RESPONSE + 1)
    except urllib.error.HTTPError as exc:
        raise _error("http", f"the OCSP responder {url} answered HTTP {exc.code} "
                     f"{exc.reason}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (socket.timeout, TimeoutError)):
            raise _error("timeout", f"the OCSP responder {url} did not answer within "
                         f"{timeout:g} s") from exc
        raise _error("http", f"cannot reach the OCSP responder {url}: {exc.reason}") from exc
    except (socket.timeout, TimeoutError) as exc:
        raise _error("timeout", f"the OCSP responder {url} did not answer within "
                     f"{timeout:g} s") from exc
    except OSError as exc:
        raise _error("http", f"cannot reach the OCSP responder {url}: {exc}") from exc
    if len(body) > MAX_RESPONSE:
        raise _error("malformed", f"the OCSP responder {url} sent more than {MAX_RESPONSE} "
                     "bytes")
    if not body:
        raise _error("malformed", f"the OCSP responder {url} sent an empty response")
    return body
