"""fasttls as the server, against clients nobody here wrote: ``openssl s_client``,
``gnutls-cli``, curl, Node.js ``tls.connect``, tlslite-ng and the stdlib ``ssl``.

The fasttls side is conftest.FasttlsServer: an HTTP/1.1 responder in a thread that answers with a
JSON record of what it saw and ends with close_notify (and no Content-Length, so a peer only ends
cleanly on that close_notify). Each peer reports what *it* saw (version, ALPN, resumption, a
clean end), parsed from its own output."""
import base64
import dataclasses
import hashlib
import json
import pathlib
import re
import socket
import ssl

import pytest

from support.interop import (
    ALPN_OFFER,
    HELLO,
    MAX_STEPS,
    RELOAD,
    SMALL_TRANSFER,
    SOCKET_TIMEOUT,
    FasttlsServer,
    find_json,
    matrix,
    require_tlslite,
    run_client,
    server_context,
)
from support.pairs import TLS12, TLS13, VERSION_NAME
from support.requires import require_program


@dataclasses.dataclass
class Run:
    """One client connection (or a resumption pair) to the fasttls server."""

    port: int
    hostname: str = "localhost"
    version: object = None
    alpn: list = None
    mtls: bool = False
    no_ticket: bool = False
    upload: object = None  # a file to POST (the 16 MiB blob)
    name: str = "client"


@dataclasses.dataclass
class Report:
    """What the peer client says about one connection."""

    output: bytes
    version: str = None
    alpn: str = None
    reused: bool = None
    clean_close: bool = None  # the peer saw fasttls's close_notify as a clean end
    server_der: bytes = None  # the server certificate it got, where the peer hands it out


def shows_server(report, ident):
    """Did the peer get `ident`'s certificate? Its DER, or else its unique OU in the peer's
    printout (s_client, gnutls-cli and curl -v print the subject)."""
    if report.server_der is not None:
        return report.server_der == ident.leaf_der
    return ident.subject_ou().encode() in report.output


def request_bytes(run):
    if run.upload is None:
        return f"GET /hello HTTP/1.1\r\nHost: {run.hostname}\r\nConnection: close\r\n\r\n".encode()
    size = run.upload.stat().st_size
    return (f"POST /upload HTTP/1.1\r\nHost: {run.hostname}\r\nContent-Length: {size}\r\n"
            f"Connection: close\r\n\r\n").encode()


def request_file(run, tmp_path):
    """The whole request (head and body) in a file, for clients that send their stdin."""
    path = tmp_path / f"{run.name}.request"
    with open(path, "wb") as out:
        out.write(request_bytes(run))
        if run.upload is not None:
            with open(run.upload, "rb") as src:
                for _ in range(100000):
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
    return path


# ----------------------------------------------------------------------------- peers


class OpensslClient:
    """`openssl s_client`: stdin is the request (-ign_eof: keep reading after stdin ends);
    prints "New,"/"Reused,", "ALPN protocol:", and "closed" on a close_notify."""

    VERSION = {TLS12: "-tls1_2", TLS13: "-tls1_3"}

    def __init__(self, pki, tmp_path):
        self.openssl = require_program("openssl")
        self.pki, self.tmp = pki, tmp_path

    def connect(self, run, sess_out=None, sess_in=None):
        args = [self.openssl, "s_client", "-connect", f"127.0.0.1:{run.port}",
                "-servername", run.hostname, "-verify_hostname", run.hostname,
                "-CAfile", self.pki.trust, "-verify_return_error", "-ign_eof"]
        if run.version is not None:
            args.append(self.VERSION[run.version])
        if run.alpn:
            args += ["-alpn", ",".join(run.alpn)]
        if run.mtls:
            args += ["-cert", self.pki.paths["client"]["cert"],
                     "-key", self.pki.paths["client"]["key"]]
        if run.no_ticket:
            args.append("-no_ticket")
        if sess_out:
            args += ["-sess_out", sess_out]
        if sess_in:
            args += ["-sess_in", sess_in]
        rc, out, err = run_client(args, self.tmp, run.name, stdin_path=request_file(run, self.tmp))
        assert rc == 0, f"s_client failed ({rc}): {out[-3000:]!r} {err[-3000:]!r}"
        version = re.search(rb"^(?:New|Reused), (TLSv1\.\d)", out, re.M)
        alpn = re.search(rb"^ALPN protocol: (\S+)", out, re.M)
        return Report(out, version and version.group(1).decode(),
                      alpn and alpn.group(1).decode(),
                      re.search(rb"^Reused,", out, re.M) is not None,
                      re.search(rb"^closed$", out, re.M) is not None)

    def resume(self, run):
        sess = self.tmp / "session.pem"
        first = self.connect(dataclasses.replace(run, name="first"), sess_out=sess)
        second = self.connect(dataclasses.replace(run, name="second"), sess_in=sess)
        return first, second


class GnutlsClient:
    """`gnutls-cli`: stdin is the request; prints "- Description: (TLS1.x-...",
    "- Application protocol:", "*** This is a resumed session" and "- Peer has closed the
    GnuTLS connection" on a close_notify (a bare TCP FIN is "non-properly terminated", as long
    as it has not closed first itself). --resume makes two connections in one run (the first
    sends no request)."""

    PRIORITY = {TLS12: "NORMAL:-VERS-ALL:+VERS-TLS1.2", TLS13: "NORMAL:-VERS-ALL:+VERS-TLS1.3"}

    def __init__(self, pki, tmp_path):
        self.cli = require_program("gnutls-cli")
        self.pki, self.tmp = pki, tmp_path

    def _args(self, run):
        args = [self.cli, "-p", str(run.port), "127.0.0.1", "--sni-hostname", run.hostname,
                "--verify-hostname", run.hostname, "--x509cafile", self.pki.trust]
        if run.version is not None:
            args.append("--priority=" + self.PRIORITY[run.version])
        for proto in run.alpn or ():
            args.append("--alpn=" + proto)
        if run.mtls:
            args += ["--x509certfile", self.pki.paths["client"]["cert"],
                     "--x509keyfile", self.pki.paths["client"]["key"]]
        if run.no_ticket:
            args.append("--noticket")
        return args

    def _report(self, rc, out, err):
        text = out + err
        assert rc == 0, f"gnutls-cli failed ({rc}): {text[-3000:]!r}"
        versions = re.findall(rb"- Description: \((TLS1\.\d)", text)
        alpn = re.search(rb"- Application protocol: (\S+)", text)
        return Report(text, versions[-1].decode().replace("TLS", "TLSv") if versions else None,
                      alpn and alpn.group(1).decode(),
                      b"This is a resumed session" in text,
                      b"Peer has closed the GnuTLS connection" in text)

    # it exits on the server's close_notify without sending its own
    ANSWERS_CLOSE_NOTIFY = False

    def connect(self, run, hold_stdin=True):
        # stdin held open: at the end of its input gnutls-cli sends its own close_notify first
        # (and then takes the server's bare FIN as a clean close too)
        return self._report(*run_client(self._args(run), self.tmp, run.name,
                                        stdin_path=request_file(run, self.tmp),
                                        hold_stdin=hold_stdin))

    def resume(self, run):
        report = self._report(*run_client(self._args(run) + ["--resume"], self.tmp, run.name,
                                          stdin_path=request_file(run, self.tmp)))
        return None, report


class CurlClient:
    """curl: -v prints the ALPN choice, "SSL re-using session ID" when it resumes, and each
    alert it reads: "TLSv1.3 (IN), TLS alert, close notify" is fasttls's close_notify (curl
    takes a bare TCP FIN as the end of the body too, so its exit code proves nothing)."""

    VERSION = {TLS12: ["--tlsv1.2", "--tls-max", "1.2"], TLS13: ["--tlsv1.3", "--tls-max", "1.3"]}

    def __init__(self, pki, tmp_path):
        self.curl = require_program("curl")
        self.pki, self.tmp = pki, tmp_path

    def _args(self, run):
        args = [self.curl, "-sS", "-v", "--http1.1", "--cacert", self.pki.trust,
                "--resolve", f"{run.hostname}:{run.port}:127.0.0.1", "--max-time", "30"]
        if run.version is not None:
            args += self.VERSION[run.version]
        if run.mtls:
            args += ["--cert", self.pki.paths["client"]["cert"],
                     "--key", self.pki.paths["client"]["key"]]
        if run.upload is not None:
            args += ["--data-binary", f"@{run.upload}", "-H", "Content-Type:"]
        return args

    def _report(self, rc, out, err, index=-1):
        assert rc == 0, f"curl failed ({rc}): {err[-3000:]!r}"
        versions = re.findall(rb"SSL connection using (TLSv1\.\d)", err)
        alpn = re.findall(rb"ALPN: server accepted (\S+)", err)
        return Report(out + err, versions[index].decode() if versions else None,
                      alpn[index].decode() if alpn else None,
                      b"SSL re-using session ID" in err,
                      re.search(rb"\(IN\), TLS alert, close notify", err) is not None)

    def connect(self, run):
        url = f"https://{run.hostname}:{run.port}/hello"
        return self._report(*run_client(self._args(run) + [url], self.tmp, run.name))

    def resume(self, run):
        # one curl run, two URLs: the second connection (Connection: close ended the first)
        # offers the session cached from the first
        url = f"https://{run.hostname}:{run.port}/hello"
        rc, out, err = run_client(self._args(run) + [url, url], self.tmp, run.name)
        return None, self._report(rc, out, err)


NODE_CLIENT = r"""
const tls = require('tls');
const fs = require('fs');
const crypto = require('crypto');
const opt = JSON.parse(process.argv[2]);
const reports = [];
function connect(i, session) {
  const o = {host: '127.0.0.1', port: opt.port, servername: opt.hostname,
             ca: fs.readFileSync(opt.ca), session: session,
             checkServerIdentity: (host, cert) => tls.checkServerIdentity(opt.hostname, cert)};
  if (opt.version) { o.minVersion = opt.version; o.maxVersion = opt.version; }
  if (opt.alpn) o.ALPNProtocols = opt.alpn;
  if (opt.cert) { o.cert = fs.readFileSync(opt.cert); o.key = fs.readFileSync(opt.key); }
  if (opt.no_ticket) o.secureOptions = crypto.constants.SSL_OP_NO_TICKET;
  let saved = null, ended = false, error = null, info = {};
  const chunks = [];
  const sock = tls.connect(o, () => {
    info = {version: sock.getProtocol(), alpn: sock.alpnProtocol || null,
            reused: sock.isSessionReused(),
            server_der: null};
    const peer = sock.getPeerCertificate();  // empty on a resumed session
    if (peer && peer.raw) info.server_der = peer.raw.toString('base64');
    sock.write(fs.readFileSync(opt.request));
  });
  sock.on('session', (s) => { saved = s; });
  sock.on('data', (d) => chunks.push(d));  // the response goes to a file (it may be 16 MiB)
  sock.on('end', () => { ended = true; });   // a close_notify (or a FIN: see below)
  sock.on('error', (e) => { error = String(e); });
  sock.on('close', () => {
    reports.push({version: info.version, alpn: info.alpn, reused: info.reused,
                  server_der: info.server_der,
                  ended: ended, error: error,
                  response: opt.response + '.' + i});
    fs.writeFileSync(opt.response + '.' + i, Buffer.concat(chunks));
    if (i + 1 < opt.connections) connect(i + 1, saved);
    else { console.log(JSON.stringify(reports)); process.exit(0); }
  });
}
setTimeout(() => { console.log('TIMEOUT'); process.exit(3); }, 30000);
connect(0, undefined);
"""


class NodeClient:
    """Node.js `tls.connect`: reports its protocol, ALPN and isSessionReused() as JSON; the
    second connection of a resumption pair offers the first one's session. Node emits 'end'
    for a bare TCP FIN as well as for a close_notify; but the fasttls server keeps its TCP side
    open until the client's close_notify (checked as the record's peer_close), so node's 'end'
    there can only come from fasttls's close_notify."""

    VERSION = {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}

    def __init__(self, pki, tmp_path):
        self.node = require_program("node")
        self.pki, self.tmp = pki, tmp_path
        self.script = tmp_path / "client.js"
        self.script.write_text(NODE_CLIENT)

    def _run(self, run, connections):
        opt = {"port": run.port, "hostname": run.hostname, "ca": str(self.pki.trust),
               "version": self.VERSION.get(run.version), "alpn": run.alpn,
               "no_ticket": run.no_ticket, "connections": connections,
               "request": str(request_file(run, self.tmp)),
               "response": str(self.tmp / f"{run.name}.response")}
        if run.mtls:
            opt["cert"] = str(self.pki.paths["client"]["cert"])
            opt["key"] = str(self.pki.paths["client"]["key"])
        rc, out, err = run_client([self.node, self.script, json.dumps(opt)], self.tmp, run.name)
        assert rc == 0, f"node client failed ({rc}): {out[-2000:]!r} {err[-2000:]!r}"
        reports = []
        for item in json.loads(out.strip().splitlines()[-1]):
            assert item["error"] is None, item["error"]
            reports.append(Report(pathlib.Path(item["response"]).read_bytes(), item["version"],
                                  item["alpn"], item["reused"], item["ended"],
                                  item["server_der"] and base64.b64decode(item["server_der"])))
        return reports

    def connect(self, run):
        return self._run(run, 1)[0]

    def resume(self, run):
        return tuple(self._run(run, 2))


class TlsliteClient:
    """tlslite-ng's client in this process (the fasttls server runs in its thread). A
    close_notify makes read() return b""; a bare TCP FIN raises TLSAbruptCloseError."""

    def __init__(self, pki, tmp_path):
        self.api = require_tlslite()
        self.pki, self.tmp = pki, tmp_path
        self.session = None

    def connect(self, run, session=None):
        api = self.api
        settings = api.HandshakeSettings()
        # tlslite-ng 0.8 sends a compressed client Certificate (RFC 8879) in TLS 1.3 even when
        # the server did not offer compression, which OpenSSL (fasttls or the stdlib alike)
        # rejects with unexpected_message: keep it off
        settings.certificate_compression_send = []
        if run.version is not None:
            settings.minVersion = settings.maxVersion = {TLS12: (3, 3), TLS13: (3, 4)}[run.version]
        sock = socket.create_connection(("127.0.0.1", run.port), timeout=SOCKET_TIMEOUT)
        conn = api.TLSConnection(sock)
        try:
            kwargs = {}
            if run.mtls:
                kwargs["certChain"] = api.X509CertChain()
                kwargs["certChain"].parsePemList(self.pki.client.chain_pem.decode())
                kwargs["privateKey"] = api.parsePEMKey(self.pki.client.key_pem.decode(),
                                                       private=True)
            conn.handshakeClientCert(settings=settings, serverName=run.hostname,
                                     alpn=[p.encode() for p in run.alpn] if run.alpn else None,
                                     session=session, **kwargs)
            self._check_server(conn, run.hostname)
            conn.write(request_file(run, self.tmp).read_bytes())
            response = bytearray()
            clean = False
            for _ in range(MAX_STEPS):
                data = conn.read()
                if not data:
                    clean = True
                    break
                response += data
            self.session = conn.session
            version = {(3, 3): "TLSv1.2", (3, 4): "TLSv1.3"}.get(conn.version)
            alpn = bytes(conn.session.appProto).decode() if conn.session.appProto else None
            reused = bool(conn.resumed)
            chain = conn.session.serverCertChain
            der = bytes(chain.x509List[0].bytes) if chain else None
            try:
                conn.close()  # sends close_notify
            except Exception:  # noqa: BLE001 - the peer may be gone already
                pass
            return Report(bytes(response), version, alpn, reused, clean, der)
        finally:
            sock.close()

    def _check_server(self, conn, hostname):
        """tlslite does not verify certificates: compare the leaf with the expected one."""
        if conn.resumed:  # no certificate in an abbreviated handshake
            return
        leaf = conn.session.serverCertChain.x509List[0].bytes
        expected = {"alpha.test": self.pki.alpha, "beta.test": self.pki.beta}.get(hostname)
        if expected is not None:
            assert bytes(leaf) == expected.leaf_der, f"wrong certificate for {hostname}"

    def resume(self, run):
        first = self.connect(dataclasses.replace(run, name="first"))
        second = self.connect(dataclasses.replace(run, name="second"), session=self.session)
        return first, second


class StdlibClient:
    """The stdlib's ssl client in this process; suppress_ragged_eofs=False, so a bare TCP FIN
    raises SSLEOFError and only a close_notify reads as b""."""

    def __init__(self, pki, tmp_path):
        self.pki, self.tmp = pki, tmp_path
        self.session = None
        self.ctx = None

    def connect(self, run, session=None):
        if session is not None:  # a session can only be resumed from its own context
            return self._connect(run, self.ctx, session)
        ctx = self.ctx = ssl.create_default_context(cadata=self.pki.trust_pem.decode())
        if run.version is not None:
            ctx.minimum_version = ctx.maximum_version = run.version
        if run.alpn:
            ctx.set_alpn_protocols(run.alpn)
        if run.mtls:
            ctx.load_cert_chain(self.pki.paths["client"]["cert"], self.pki.paths["client"]["key"])
        if run.no_ticket:
            ctx.options |= ssl.OP_NO_TICKET
        return self._connect(run, ctx, session)

    def _connect(self, run, ctx, session):
        raw = socket.create_connection(("127.0.0.1", run.port), timeout=SOCKET_TIMEOUT)
        with ctx.wrap_socket(raw, server_hostname=run.hostname, session=session,
                             suppress_ragged_eofs=False) as sock:
            sock.sendall(request_file(run, self.tmp).read_bytes())
            response = bytearray()
            for _ in range(MAX_STEPS):
                data = sock.recv(65536)
                if not data:
                    break
                response += data
            else:
                raise AssertionError("stdlib read loop did not end")
            self.session = sock.session
            report = Report(bytes(response), sock.version(), sock.selected_alpn_protocol(),
                            sock.session_reused, True, sock.getpeercert(binary_form=True))
            sock.unwrap()  # our close_notify
        return report

    def resume(self, run):
        first = self.connect(dataclasses.replace(run, name="first"))
        second = self.connect(dataclasses.replace(run, name="second"), session=self.session)
        return first, second


PEERS = {
    "openssl": OpensslClient,
    "gnutls": GnutlsClient,
    "curl": CurlClient,
    "node": NodeClient,
    "tlslite": TlsliteClient,
    "stdlib": StdlibClient,
}

EXCLUDED = {
    # curl has no switch to refuse session tickets, so it cannot be made to resume by session ID
    ("curl", "resume-id-TLSv1.2"): "curl cannot disable session tickets",
    # tlslite-ng's record layer is pure Python (no C AES here): 16 MiB takes about a minute,
    # over the suite's time budget; it moves 1 MiB instead (transfer-1MiB)
    ("tlslite", "transfer-16MiB"): "pure-Python record layer too slow for 16 MiB",
}
# gnutls-cli prints what it receives with millions of tiny write()s (16 MiB takes 15 s of
# system time, against openssl s_server too): it downloads 1 MiB (its upload is 16 MiB)
DOWNLOAD_SIZE = {"gnutls": SMALL_TRANSFER.size}
# set_cert() reloading a serving context is a server-side feature: checked with every client
EXTRA = [("tlslite", SMALL_TRANSFER)] + [(peer, RELOAD) for peer in PEERS]


# ----------------------------------------------------------------------------- the test


@pytest.mark.parametrize("peer,cell", matrix(PEERS, EXCLUDED, EXTRA))
def test_server(peer, cell, pki, blob, blobs, tmp_path):
    client = PEERS[peer](pki, tmp_path)
    ctx = server_context(pki, cell)
    base = Run(0, version=cell.version, alpn=ALPN_OFFER if cell.alpn else None, mtls=cell.mtls,
               no_ticket=cell.resume == "id",
               upload=blob[0] if cell.transfer else None)
    if cell.reload:
        # set_cert() on a serving context: each next connection gets the new certificate.
        # RSA -> ECDSA -> RSA: the last step is the one where a stale certificate of the other
        # key type would still be served
        steps = [("rsa", None), ("ecdsa", "ecdsa"), ("back-to-rsa", "rsa")]
        reports = []
        with FasttlsServer(ctx, count=len(steps)) as server:
            for name, key in steps:
                if key is not None:
                    ctx.set_cert(pki.server[key].chain_pem, pki.server[key].key_pem)
                reports.append(client.connect(dataclasses.replace(base, port=server.port,
                                                                  name=name)))
        server.result(expected=len(steps))
        for (name, _), report, key in zip(steps, reports, ("rsa", "ecdsa", "rsa")):
            assert HELLO in report.output
            got = [k for k in ("rsa", "ecdsa") if shows_server(report, pki.server[k])]
            assert got == [key], (f"step {name}: {peer} got the {got} certificate, not the {key} "
                                  f"one just loaded with set_cert")
        return
    if cell.sni:
        with FasttlsServer(ctx, count=2) as server:
            reports = {name: client.connect(dataclasses.replace(base, port=server.port,
                                                                hostname=name, name=name))
                       for name in ("alpha.test", "beta.test")}
        records = server.result(expected=2)
        # each client verified the certificate against the name it asked for (tlslite, which
        # does not verify, compared the leaf), so each got the certificate sni_callback chose
        assert server.sni_seen == ["alpha.test", "beta.test"]
        for report in reports.values():
            assert HELLO in report.output
        ends = {"close_notify" if getattr(client, "ANSWERS_CLOSE_NOTIFY", True) else "eof"}
        assert {r["peer_close"] for r in records} == ends, records
        return
    if cell.resume:
        with FasttlsServer(ctx, count=2) as server:
            first, second = client.resume(dataclasses.replace(base, port=server.port))
        records = server.result(expected=2)
        assert [r["reused"] for r in records] == [False, True], records
        assert second.reused, f"{peer} did not report a resumed session: {second.output[-3000:]!r}"
        if first is not None:
            assert not first.reused
        if peer == "openssl" and cell.version == TLS12:
            # s_client shows the ticket it got (or not): the resumption used what the cell says
            got_ticket = b"TLS session ticket:" in first.output
            assert got_ticket == (cell.resume == "ticket"), first.output[-3000:]
        assert records[1]["version"] == VERSION_NAME[cell.version]
        assert HELLO in second.output
        return
    download = blobs[DOWNLOAD_SIZE.get(peer, cell.size)]
    with FasttlsServer(ctx, download=download[0] if cell.transfer else None) as server:
        report = client.connect(dataclasses.replace(base, port=server.port))
    (record,) = server.result(expected=1)
    assert HELLO in report.output, report.output[-3000:]
    assert find_json(report.output) == {k: v for k, v in record.items()
                                        if k not in ("peer_close", "leftover")}
    expected_version = VERSION_NAME[cell.version] if cell.version else "TLSv1.3"
    assert record["version"] == expected_version
    if report.version is not None:
        assert report.version == expected_version
    if cell.alpn:
        assert record["alpn"] == "http/1.1"
        assert report.alpn == "http/1.1", report.output[-3000:]
    if cell.mtls:
        assert record["client_names"] == ["client.example"]
        # and the same client without a certificate gets nothing: fasttls refuses it
        with FasttlsServer(server_context(pki, cell)) as bare_server:
            try:
                bare = client.connect(dataclasses.replace(base, port=bare_server.port,
                                                          mtls=False, name="no-cert"))
            except Exception:  # noqa: BLE001 - the peer's own way of failing
                bare = None
        assert bare is None or HELLO not in bare.output
        assert len(bare_server.errors) == 1 and isinstance(bare_server.errors[0], ssl.SSLError), \
            bare_server.errors
    if cell.transfer:
        # both ways: the peer's upload as fasttls read it, and fasttls's answer as the peer
        # printed it (right after HELLO in its output)
        assert record["body_length"] == cell.size
        assert record["sha256"] == blob[1]
        start = report.output.index(HELLO) + len(HELLO)
        size = DOWNLOAD_SIZE.get(peer, cell.size)
        downloaded = report.output[start:start + size]
        assert len(downloaded) == size
        assert hashlib.sha256(downloaded).hexdigest() == download[1], f"{peer}: bad download"
    # close_notify both ways: fasttls's ended the response cleanly for the peer, and the peer
    # answered with its own (checked in every cell; the close_notify cell is the plain case)
    assert report.clean_close, f"{peer} saw no close_notify: {report.output[-3000:]!r}"
    if getattr(client, "ANSWERS_CLOSE_NOTIFY", True):
        assert record["peer_close"] == "close_notify", record
    else:
        assert record["peer_close"] == "eof", record
        if cell.close:
            # the peer's close_notify the other way round: gnutls-cli sends it at the end of
            # its input, right after the request; fasttls reads it as the end of the request
            # stream and still answers (a half-closed connection)
            with FasttlsServer(server_context(pki, cell)) as server:
                report = client.connect(dataclasses.replace(base, port=server.port,
                                                            name="peer-closes-first"),
                                        hold_stdin=False)
            (record,) = server.result(expected=1)
            assert HELLO in report.output
            assert record["peer_close"] == "close_notify", record
