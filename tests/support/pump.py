"""The in-memory handshake between two fasttls TLS objects, shared by the tests and by the
scripts they run in child processes (no pytest needed: `import tls_pump` from tests/)."""


def pump(client, server, to_server=None, limit=20):
    """Run the handshake until both ends finish; `to_server` is the client's first flight if
    the caller already took it. TLS 1.3 session tickets reach the client after its own
    handshake finished: read() consumes them (and must yield no data). Bounded by `limit`."""
    if to_server is None:
        to_server = client.handshake()
    for _ in range(limit):
        if not server.finished():
            to_client = server.handshake(to_server)
        else:
            to_client = b""
            assert server.read(to_server) == b""
        if not client.finished():
            to_server = client.handshake(to_client)
        else:
            to_server = b""
            assert client.read(to_client) == b""
        if client.finished() and server.finished() and not to_server:
            return
    raise AssertionError("handshake did not complete within %d round trips" % limit)
