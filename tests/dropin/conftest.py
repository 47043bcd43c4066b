"""Fixtures of the drop-in tests: the three TLS modes, the reference HTTPS servers, and a spy that
proves which engine each connection really ran on.

Modes (`tls_mode`):
- "stdlib":   the test passes stdlib contexts (ssl.SSLContext / ssl.create_default_context);
              the baseline every library's behaviour is compared to.
- "fasttls":  the test passes fasttls.SSLContext / fasttls.create_default_context contexts.
- "injected": fasttls.inject_into_ssl() runs before the test (extract_from_ssl() after, in a
              finally), SSL_CERT_FILE names the test CA, and each library builds its own context
              where it can (documented per test where it cannot).

The fasttls modes need the drop-in layer (fasttls.SSLContext & co.): without it they skip, and
fail under CI=true, like a missing peer program (support.requires)."""
import ssl

import pytest
import trustme

import fasttls
from support.dropin import (
    STDLIB_SSLContext,
    STDLIB_create_default_context,
    is_fasttls_context,
    require_dropin,
    serve_https,
    stdlib_client_context,
    stdlib_server_context,
)

MODES = ["stdlib", "fasttls", "injected"]


class EngineSpy:
    """Records every wrap_socket/wrap_bio call made on any SSLContext in this process, with its
    side, so a test can prove that its library's connection ran on the engine of its mode (and
    not, say, on a stdlib context the library made at import time)."""

    def __init__(self):
        self.calls = []     # (context, server_side)

    def install(self, monkeypatch):
        """Spy on the stdlib class, fasttls.SSLContext, whatever `ssl.SSLContext` is now, and
        every class between them and the stdlib's that defines its own wrap method."""
        classes = []
        for top in (STDLIB_SSLContext, getattr(fasttls, "SSLContext", None), ssl.SSLContext):
            for klass in getattr(top, "__mro__", ()):
                if issubclass(klass, STDLIB_SSLContext) and klass not in classes:
                    classes.append(klass)
        for klass in classes:
            for name, side_index in (("wrap_socket", 1), ("wrap_bio", 2)):
                original = vars(klass).get(name)
                if original is not None and not getattr(original, "_dropin_spy", False):
                    monkeypatch.setattr(klass, name, self._spy(original, side_index))

    def _spy(self, original, side_index):
        calls = self.calls

        def spy(self, *args, **kwargs):
            # wrap_socket(sock, server_side, ...), wrap_bio(incoming, outgoing, server_side, ...)
            if "server_side" in kwargs:
                server_side = kwargs["server_side"]
            else:
                server_side = len(args) > side_index and args[side_index]
            calls.append((self, bool(server_side)))
            return original(self, *args, **kwargs)

        spy._dropin_spy = True
        spy.__name__ = original.__name__
        spy.__doc__ = original.__doc__
        return spy

    def contexts(self, server_side):
        return [ctx for ctx, side in self.calls if side == server_side]


class Mode:
    """One TLS mode of a test; see the module docstring."""

    def __init__(self, name, ca, ca_file, spy):
        self.name = name
        self.ca = ca
        self.ca_file = ca_file
        self.spy = spy

    def __repr__(self):
        return "Mode(%r)" % self.name

    @property
    def injected(self):
        return self.name == "injected"

    def client_context(self):
        """A client context trusting the test CA, made as user code of this mode makes it."""
        if self.name == "stdlib":
            ctx = STDLIB_create_default_context(cafile=self.ca_file)
        elif self.name == "fasttls":
            ctx = fasttls.create_default_context(cafile=self.ca_file)
        else:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        self._check_type(ctx, "create_default_context()")
        return ctx

    def default_client_context(self):
        """A client context with no CA of its own: the system defaults, i.e. SSL_CERT_FILE
        (the test CA) in the injected mode, and no trust of the test CA otherwise."""
        if self.name == "stdlib":
            ctx = STDLIB_create_default_context()
        elif self.name == "fasttls":
            ctx = fasttls.create_default_context()
        else:
            ctx = ssl.create_default_context()
        self._check_type(ctx, "create_default_context()")
        return ctx

    def server_context(self, cert):
        """A server context with `cert` (a trustme.LeafCert)."""
        if self.name == "stdlib":
            ctx = STDLIB_SSLContext(ssl.PROTOCOL_TLS_SERVER)
        elif self.name == "fasttls":
            ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._check_type(ctx, "SSLContext(PROTOCOL_TLS_SERVER)")
        cert.configure_cert(ctx)
        return ctx

    def _check_type(self, ctx, what):
        assert isinstance(ctx, STDLIB_SSLContext), "%s: %r is no ssl.SSLContext" % (what, ctx)
        if self.name == "stdlib":
            assert not is_fasttls_context(ctx), what
        else:
            assert is_fasttls_context(ctx), "%s in mode %s gave %r" % (what, self.name, type(ctx))

    def check_engine(self, server_side=False):
        """Assert the connections of this side ran on this mode's engine, and that there was one."""
        side = "server" if server_side else "client"
        contexts = self.spy.contexts(server_side)
        assert contexts, "no %s-side wrap_socket/wrap_bio call was seen" % side
        wrong = [type(ctx) for ctx in contexts if is_fasttls_context(ctx) != (self.name != "stdlib")]
        assert not wrong, "mode %s: %s-side connections on %r" % (self.name, side, wrong)


@pytest.fixture(scope="session")
def rogue_ca():
    """A CA nobody trusts: its certificates must fail verification."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("dropin-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def https_server(server_cert):
    """Reference stdlib HTTPS server with a certificate from the trusted test CA."""
    with serve_https(stdlib_server_context(server_cert)) as httpd:
        yield httpd


@pytest.fixture(scope="session")
def untrusted_server(rogue_ca):
    """Reference stdlib HTTPS server whose certificate (for 127.0.0.1/localhost) no client trusts."""
    cert = rogue_ca.issue_cert("localhost", "127.0.0.1")
    with serve_https(stdlib_server_context(cert)) as httpd:
        yield httpd


@pytest.fixture(scope="session")
def reference_client_context(ca):
    """Stdlib client context trusting the test CA, to fetch from a server under test."""
    return stdlib_client_context(ca)


@pytest.fixture(params=MODES)
def tls_mode(request, ca, ca_file, monkeypatch):
    name = request.param
    if name != "stdlib":
        require_dropin()
    spy = EngineSpy()
    mode = Mode(name, ca, ca_file, spy)
    if name != "injected":
        spy.install(monkeypatch)
        yield mode
        return
    # Libraries that build their own context from the system defaults find the test CA here.
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    fasttls.inject_into_ssl()
    try:
        spy.install(monkeypatch)    # after injection: ssl.SSLContext may be a class of its own
        yield mode
    finally:
        fasttls.extract_from_ssl()
    assert ssl.SSLContext is STDLIB_SSLContext, "extract_from_ssl() left ssl.SSLContext patched"
    assert ssl.create_default_context is STDLIB_create_default_context, (
        "extract_from_ssl() left ssl.create_default_context patched"
    )
