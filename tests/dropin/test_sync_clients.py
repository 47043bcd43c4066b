"""Blocking HTTP clients over the drop-in: http.client, urllib.request, urllib3, requests.

Each test runs in the three modes of `tls_mode` (conftest.py) against the reference stdlib
HTTPS server on 127.0.0.1, and checks the body of the response and the engine that ran the
client side. In the injected mode each library builds its own context:
- http.client and urllib.request: http.client's default context (the system defaults, i.e.
  SSL_CERT_FILE);
- urllib3 and requests: urllib3's own SSLContext, with `ca_certs` / `verify=` naming the CA file.
"""
import http.client
import ssl
import urllib.error
import urllib.request

import pytest
import requests
import requests.adapters
import urllib3

from support.dropin import HOST, IO_TIMEOUT, STDLIB_SSLSocket, assert_untrusted_issuer, body_for


# --- http.client -------------------------------------------------------------------------------

def https_connection(tls_mode, port):
    if tls_mode.injected:
        return http.client.HTTPSConnection(HOST, port, timeout=IO_TIMEOUT)
    return http.client.HTTPSConnection(
        HOST, port, timeout=IO_TIMEOUT, context=tls_mode.client_context()
    )


def test_http_client(tls_mode, https_server):
    conn = https_connection(tls_mode, https_server.port)
    try:
        for path in ("/http.client/1", "/http.client/2"):      # two requests, one connection
            conn.request("GET", path)
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, body_for(path))
        # httpcore and others rely on a genuine ssl.SSLSocket
        assert isinstance(conn.sock, STDLIB_SSLSocket), type(conn.sock)
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        conn.close()
    tls_mode.check_engine()


def test_http_client_untrusted(tls_mode, untrusted_server):
    conn = https_connection(tls_mode, untrusted_server.port)
    try:
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            conn.request("GET", "/")
    finally:
        conn.close()
    assert_untrusted_issuer(info.value)
    tls_mode.check_engine()


# --- urllib.request ----------------------------------------------------------------------------

def urlopen(tls_mode, url):
    if tls_mode.injected:
        return urllib.request.urlopen(url, timeout=IO_TIMEOUT)
    return urllib.request.urlopen(url, timeout=IO_TIMEOUT, context=tls_mode.client_context())


def test_urllib_request(tls_mode, https_server):
    with urlopen(tls_mode, https_server.url("/urllib")) as resp:
        assert (resp.status, resp.read()) == (200, body_for("/urllib"))
    tls_mode.check_engine()


def test_urllib_request_untrusted(tls_mode, untrusted_server):
    with pytest.raises(urllib.error.URLError) as info:
        urlopen(tls_mode, untrusted_server.url("/"))
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError), repr(info.value.reason)
    assert_untrusted_issuer(info.value.reason)
    tls_mode.check_engine()


# --- urllib3 -----------------------------------------------------------------------------------

def pool_manager(tls_mode, **kwargs):
    if tls_mode.injected:
        return urllib3.PoolManager(ca_certs=tls_mode.ca_file, **kwargs)
    return urllib3.PoolManager(ssl_context=tls_mode.client_context(), **kwargs)


def test_urllib3(tls_mode, https_server):
    pm = pool_manager(tls_mode, timeout=IO_TIMEOUT, retries=False)
    try:
        for path in ("/urllib3/1", "/urllib3/2"):
            resp = pm.request("GET", https_server.url(path))
            assert (resp.status, resp.data) == (200, body_for(path))
    finally:
        pm.clear()
    tls_mode.check_engine()


def test_urllib3_untrusted(tls_mode, untrusted_server):
    pm = pool_manager(tls_mode, timeout=IO_TIMEOUT)
    try:
        with pytest.raises(urllib3.exceptions.SSLError) as direct:
            pm.request("GET", untrusted_server.url("/"), retries=False)
        with pytest.raises(urllib3.exceptions.MaxRetryError) as retried:
            pm.request("GET", untrusted_server.url("/"), retries=0)
    finally:
        pm.clear()
    assert_untrusted_issuer(direct.value)
    assert isinstance(retried.value.reason, urllib3.exceptions.SSLError), repr(retried.value.reason)
    assert_untrusted_issuer(retried.value.reason)
    tls_mode.check_engine()


# --- requests ----------------------------------------------------------------------------------

class ContextAdapter(requests.adapters.HTTPAdapter):
    """The usual way to hand requests an SSLContext: through urllib3's pool manager."""

    def __init__(self, ssl_context):
        self._ssl_context = ssl_context
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(*args, **kwargs)


def requests_get(tls_mode, url):
    with requests.Session() as session:
        if tls_mode.injected:
            return session.get(url, verify=tls_mode.ca_file, timeout=IO_TIMEOUT)
        session.mount("https://", ContextAdapter(tls_mode.client_context()))
        return session.get(url, timeout=IO_TIMEOUT)


def test_requests(tls_mode, https_server):
    resp = requests_get(tls_mode, https_server.url("/requests"))
    assert (resp.status_code, resp.content) == (200, body_for("/requests"))
    tls_mode.check_engine()


def test_requests_untrusted(tls_mode, untrusted_server):
    with pytest.raises(requests.exceptions.SSLError) as info:
        requests_get(tls_mode, untrusted_server.url("/"))
    assert_untrusted_issuer(info.value)
    tls_mode.check_engine()
