"""The in-memory handshake between two fasttls TLS objects (and between two ssl.SSLObject-style
objects over MemoryBIOs): no sockets, no pytest, no certificates of its own, so the tests and
the scripts they run in child processes (fuzz/, tests/memcheck_subset.py) share it."""
import ssl


def deliver(tls, data):
    """Feed data to tls through handshake() before it finished, read() after. Returns
    (bytes to send back, plaintext)."""
    if not tls.finished():
        out = tls.handshake(data)
        # The handshake waiting for the application (TLS.pause): resolve it and go on.
        for _ in range(8):
            pause = getattr(tls, "pause", None)
            if pause is None:
                break
            pause.resolve(5.0)
            out += tls.handshake()
        return out, b""
    return b"", tls.read(data)


def pump(client, server, to_server=None, limit=50):
    """Run the handshake until both ends finish; `to_server` is the client's first flight if
    the caller already took it. Either end may finish first (the client in TLS 1.3, the server
    on TLS 1.2 resumption); what an end receives after that goes through read() and must hold
    no plaintext (TLS 1.3 session tickets reach the client this way). Bounded by `limit` round
    trips."""
    if to_server is None:
        to_server = client.handshake()
    for _ in range(limit):
        to_client, plaintext = deliver(server, to_server)
        assert plaintext == b"", "plaintext during the handshake"
        to_server, plaintext = deliver(client, to_client)
        assert plaintext == b"", "plaintext during the handshake"
        if client.finished() and server.finished() and not to_server:
            return
    raise AssertionError(f"handshake did not complete within {limit} round trips")


def first_session(client_ctx, server_ctx, server_hostname="localhost"):
    """A full handshake in memory between new TLS objects of the two contexts; returns the
    client's session, after one read() so that TLS 1.3 tickets have reached it."""
    import fasttls  # here, not at the top: deliver() and pump() need only the TLS objects

    client = fasttls.newtls("client", client_ctx, server_hostname)
    pump(client, fasttls.newtls("server", server_ctx))
    client.read(b"")
    return client.session


def resume(client_ctx, server_ctx, session, server_hostname="localhost"):
    """A handshake in memory offering `session`, between new TLS objects of the two contexts;
    returns (client, server) for the caller to ask whether it resumed."""
    import fasttls

    client = fasttls.newtls("client", client_ctx, server_hostname, session=session)
    server = fasttls.newtls("server", server_ctx)
    pump(client, server)
    return client, server


def pump_sslobjects(client, server, client_in, client_out, server_in, server_out, limit=20):
    """Run do_handshake() on two SSLObject-style objects (the stdlib's, fasttls's drop-in)
    over their MemoryBIOs until both finish, each end's output handed to the other after
    every step. Bounded by `limit` rounds."""
    done = {"client": False, "server": False}
    for _ in range(limit):
        for name, obj, out, into in (("client", client, client_out, server_in),
                                     ("server", server, server_out, client_in)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            into.write(out.read())
        if all(done.values()):
            return
    raise AssertionError(f"handshake did not complete within {limit} rounds: {done}")
