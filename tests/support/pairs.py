"""fasttls client/server pairs of the native sans-IO API (``newctx`` / ``newtls``), in memory:
contexts for an Identity (support.certs), the TLS versions every handshake case runs on, and
handshakes that must fail."""
import ssl

import pytest

import fasttls
from support.pump import deliver, pump

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
VERSIONS = [pytest.param(TLS12, id="TLSv1.2"), pytest.param(TLS13, id="TLSv1.3")]
VERSION_NAME = {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}


def client_ctx(identity, **options):
    """A client context trusting `identity`'s CA."""
    return fasttls.newctx(cadata=identity.ca_pem, **options)


def server_ctx(identity, **options):
    """A server context serving `identity`'s chain, from in-memory PEM."""
    ctx = fasttls.newctx(**options)
    ctx.set_cert(identity.chain_pem, identity.key_pem)
    return ctx


def version_options(version):
    return {} if version is None else {"minimum_version": version, "maximum_version": version}


def make_pair(identity, version=None, hostname="localhost", client_options=None,
              server_options=None):
    """A fresh fasttls client and server, not yet handshaken."""
    cctx = client_ctx(identity, **version_options(version), **(client_options or {}))
    sctx = server_ctx(identity, **(server_options or {}))
    return fasttls.newtls("client", cctx, hostname), fasttls.newtls("server", sctx)


def connected_pair(identity, version=None, **kwargs):
    client, server = make_pair(identity, version, **kwargs)
    pump(client, server)
    return client, server


def handshake_error(sender, receiver, limit=50):
    """Run a handshake between sender (the client) and receiver until one side raises; return
    (the exception, the side that raised, the other side). Fails if no side raises."""
    data = sender.handshake()
    ends = [receiver, sender]
    for step in range(2 * limit):
        tls = ends[step % 2]
        try:
            data, _ = deliver(tls, data)
        except fasttls.SSLError as exc:
            return exc, tls, ends[(step + 1) % 2]
        if sender.finished() and receiver.finished() and not data:
            break
    raise AssertionError("the handshake was expected to fail but did not")
