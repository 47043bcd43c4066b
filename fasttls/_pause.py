"""HandshakePause: the handshake stopped for the application, not for the peer.

A server handshake can need something only the application can get without blocking a thread
or an event loop: a signature from a key server (keyless), a session from a shared store. The
engine then returns from `TLS.handshake()` / `TLS.handshake_on()` with the handshake still
running and `TLS.pause` set to one of these objects; whoever drives the connection resolves it
(blocking with the socket's timeout in the helpers and the drop-in socket, awaiting in
fasttls.aio, or by hand in sans-IO code) and then calls the handshake again, which continues
where it stopped. Every kind of pause resolves the same two ways, so the drivers stay generic.
"""
from typing import Optional, Protocol

__all__ = ["HandshakePause"]


class HandshakePause(Protocol):
    def resolve(self, timeout: Optional[float]) -> None:
        """Do the work, blocking up to `timeout` seconds (None: no limit), and hand the result
        (or the failure) to the connection. Never raises for a failed lookup or signature: the
        failure is handed over, and the next handshake call raises it."""

    async def resolve_async(self) -> None:
        """The same, awaited on the running event loop, which it never blocks."""
