"""inject_into_ssl() / extract_from_ssl() themselves: what injection reaches, that the stdlib's
property setters do not recurse on a patched class (the bug truststore had), and that
extraction restores exactly what was there."""
import http.client
import ssl

import pytest
import urllib3.util.ssl_

import fasttls
from support.dropin import STDLIB_SSLContext, is_fasttls_context, require_dropin


def patch_points():
    """The objects injection may replace, by name."""
    return {
        "ssl.SSLContext": ssl.SSLContext,
        "ssl.create_default_context": ssl.create_default_context,
        "ssl._create_default_https_context": ssl._create_default_https_context,
        "urllib3.util.ssl_.SSLContext": urllib3.util.ssl_.SSLContext,
    }


@pytest.fixture
def injected():
    require_dropin()
    before = patch_points()
    assert ssl.SSLContext is STDLIB_SSLContext, "a previous test left fasttls injected"
    fasttls.inject_into_ssl()
    try:
        yield before
    finally:
        fasttls.extract_from_ssl()


def test_injection_reaches(injected):
    made = {
        "ssl.SSLContext(PROTOCOL_TLS_CLIENT)": ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
        "ssl.SSLContext(PROTOCOL_TLS_SERVER)": ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER),
        "ssl.create_default_context()": ssl.create_default_context(),
        "ssl.create_default_context(CLIENT_AUTH)":
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
        "http.client default": http.client.HTTPSConnection(HOST_UNUSED, 443)._context,
        "urllib3 create_urllib3_context()": urllib3.util.ssl_.create_urllib3_context(),
    }
    for what, ctx in made.items():
        assert is_fasttls_context(ctx), "%s gave %r" % (what, type(ctx))
        # modules that captured the stdlib class before injection still accept it
        assert isinstance(ctx, STDLIB_SSLContext), what
    assert made["ssl.create_default_context()"].verify_mode == ssl.CERT_REQUIRED
    assert made["ssl.create_default_context()"].check_hostname is True
    assert made["ssl.create_default_context(CLIENT_AUTH)"].verify_mode == ssl.CERT_NONE


HOST_UNUSED = "127.0.0.1"   # HTTPSConnection does not connect until a request


@pytest.mark.parametrize("factory", ["SSLContext", "create_default_context"])
def test_setters_do_not_recurse(injected, factory):
    if factory == "SSLContext":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    else:
        ctx = ssl.create_default_context()
    ctx.options |= ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_COMPRESSION
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    assert (ctx.minimum_version, ctx.maximum_version) == (
        ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    )
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    assert ctx.verify_flags & ssl.VERIFY_X509_STRICT
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_OPTIONAL
    assert (ctx.check_hostname, ctx.verify_mode) == (False, ssl.CERT_OPTIONAL)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    assert (ctx.check_hostname, ctx.verify_mode) == (True, ssl.CERT_REQUIRED)


class PreInjectionSubclass(ssl.SSLContext):
    """A subclass of the stdlib class, defined before injection (as a library would)."""


@pytest.mark.parametrize("made_by", ["stdlib context", "stdlib subclass"])
def test_stdlib_setters_do_not_recurse(made_by):
    """Contexts of the stdlib's own class (made before injection, like those aiohttp and requests
    make at import) or of a subclass of it, used while fasttls is injected: their property
    setters are the stdlib's, which look up `SSLContext` in the ssl module at call time
    (`super(SSLContext, SSLContext).verify_mode.__set__`). With the patched class there, a naive
    injection recurses forever (the bug truststore had)."""
    require_dropin()
    if made_by == "stdlib context":
        ctx = STDLIB_SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    else:
        ctx = PreInjectionSubclass(ssl.PROTOCOL_TLS_CLIENT)
    fasttls.inject_into_ssl()
    try:
        for name, value in [
            ("verify_mode", ssl.CERT_REQUIRED),
            ("options", ctx.options | ssl.OP_NO_COMPRESSION),
            ("minimum_version", ssl.TLSVersion.TLSv1_2),
            ("verify_flags", ctx.verify_flags | ssl.VERIFY_X509_STRICT),
        ]:
            try:
                setattr(ctx, name, value)
            except RecursionError:
                pytest.fail("setting %s on a %s recursed while injected" % (name, made_by))
        if made_by == "stdlib subclass":
            assert not is_fasttls_context(PreInjectionSubclass(ssl.PROTOCOL_TLS_CLIENT))
    finally:
        fasttls.extract_from_ssl()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_flags & ssl.VERIFY_X509_STRICT


def test_extract_restores_exactly(injected):
    before = injected
    assert patch_points()["ssl.SSLContext"] is not before["ssl.SSLContext"]
    fasttls.extract_from_ssl()
    after = patch_points()
    for name, original in before.items():
        assert after[name] is original, name
    assert not is_fasttls_context(ssl.create_default_context())
    assert not is_fasttls_context(http.client.HTTPSConnection(HOST_UNUSED, 443)._context)


def test_inject_twice_extract_once(injected):
    before = injected
    fasttls.inject_into_ssl()   # a second call changes nothing
    assert is_fasttls_context(ssl.create_default_context())
    fasttls.extract_from_ssl()
    assert patch_points() == before
    fasttls.extract_from_ssl()  # and extracting again is harmless
    assert patch_points() == before
