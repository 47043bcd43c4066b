"""A fasttls-backed HTTPS server fetched with curl (OpenSSL), in the three modes of `tls_mode`:
http.server with `SSLContext(PROTOCOL_TLS_SERVER).wrap_socket` per connection (TLS 1.2 and 1.3),
and an asyncio stream server. curl connects to 127.0.0.1 under the name "localhost" (--resolve),
so SNI and the certificate's DNS name are both exercised."""
import asyncio
import subprocess

import pytest

from support.dropin import (
    HOST,
    IO_TIMEOUT,
    asyncio_http_handler,
    body_for,
    run_asyncio,
    serve_https,
)
from support.requires import require_program

CURL_TIMEOUT = 10


def curl_command(ca_file, port, path, tls_version=None):
    command = [
        require_program("curl"), "--silent", "--show-error", "--fail", "--http1.1",
        "--max-time", str(CURL_TIMEOUT), "--cacert", ca_file,
        "--resolve", "localhost:%d:%s" % (port, HOST),
    ]
    if tls_version is not None:
        command += ["--tlsv" + tls_version, "--tls-max", tls_version]
    return command + ["https://localhost:%d%s" % (port, path)]


@pytest.mark.parametrize("tls_version", ["1.2", "1.3"])
def test_http_server(tls_mode, tls_version, server_cert, ca_file):
    with serve_https(tls_mode.server_context(server_cert)) as httpd:
        for path in ("/curl/1", "/curl/2"):
            done = subprocess.run(
                curl_command(ca_file, httpd.port, path, tls_version),
                capture_output=True, timeout=CURL_TIMEOUT + 5, check=False,
            )
            assert done.returncode == 0, (done.returncode, done.stderr, httpd.handshake_failures)
            assert done.stdout == body_for(path)
        assert not httpd.errors, httpd.errors
    tls_mode.check_engine(server_side=True)


def test_asyncio_server(tls_mode, server_cert, ca_file):
    require_program("curl")     # before starting anything: skips, or fails under CI=true

    async def main():
        server = await asyncio.start_server(
            asyncio_http_handler, HOST, 0, ssl=tls_mode.server_context(server_cert)
        )
        try:
            port = server.sockets[0].getsockname()[1]
            proc = await asyncio.create_subprocess_exec(
                *curl_command(ca_file, port, "/curl-asyncio"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), CURL_TIMEOUT + 5)
            except asyncio.TimeoutError:
                proc.kill()
                await asyncio.wait_for(proc.wait(), IO_TIMEOUT)
                raise
            return proc.returncode, out, err
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), IO_TIMEOUT)

    returncode, out, err = run_asyncio(main)
    assert returncode == 0, (returncode, err)
    assert out == body_for("/curl-asyncio")
    tls_mode.check_engine(server_side=True)
