"""A fasttls server with default settings, scanned by sslyze (issue 4, section 2).

The server is a small threaded accept loop on 127.0.0.1 built on fasttls.helpers, serving an
RSA-2048 certificate issued by a trustme CA (the leaf is built with `cryptography` so that it
is a valid 90-day certificate sslyze's strict path validation accepts; trustme's own leaves
have a critical subjectAltName next to a non-empty subject, which it rejects). One scan runs
per test session (`--mozilla_config=intermediate`, `--json_out`); each test checks one property.

sslyze pins its own nassl and cryptography, so it is not a test dependency of fasttls: it lives
in a separate virtual environment (`.ci/run` makes /opt/sslyze-venv) and is found through
$FASTTLS_SSLYZE, else on PATH (a missing sslyze skips locally and fails under CI=true).
Run with `pytest -s tests/test_security_scan.py` to see the scan summary."""
import datetime
import ipaddress
import json
import os
import re
import subprocess
import threading

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import fasttls
from support.accept import accept_until, local_listener
from support.requires import require_program, skip_or_fail

SCAN_TIMEOUT = 120.0  # the scan takes about a second on loopback
CONNECTION_TIMEOUT = 5.0  # every server-side socket
JOIN_TIMEOUT = 10.0

VERSION_FIELDS = {
    "SSLv2": "ssl_2_0_cipher_suites",
    "SSLv3": "ssl_3_0_cipher_suites",
    "TLSv1.0": "tls_1_0_cipher_suites",
    "TLSv1.1": "tls_1_1_cipher_suites",
    "TLSv1.2": "tls_1_2_cipher_suites",
    "TLSv1.3": "tls_1_3_cipher_suites",
}
WEAK_MARKERS = ("NULL", "EXPORT", "EXP_", "_anon_", "ANON", "RC4", "_DES_", "3DES", "DES40",
                "_MD5", "IDEA", "SEED", "PSK", "SRP")


def sslyze_program():
    """$FASTTLS_SSLYZE (the path of the executable) if set, else `sslyze` on PATH."""
    path = os.environ.get("FASTTLS_SSLYZE")
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            skip_or_fail(f"FASTTLS_SSLYZE={path!r} is not an executable file")
        return path
    return require_program("sslyze")


def rsa_2048_identity(directory):
    """(chain PEM, key PEM, path of the CA PEM): a 90-day RSA-2048 leaf for localhost and
    127.0.0.1, signed (SHA-256) by an RSA trustme CA."""
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return chain, key_pem, ca_path


class ScanTarget:
    """A threaded fasttls server with a default context: handshake, read one request, answer,
    close_notify. Every socket has a timeout; stop() joins every thread."""

    def __init__(self, chain, key):
        self.ctx = fasttls.newctx()  # default settings: that is what is scanned
        self.ctx.set_cert(chain, key)
        self.listener = local_listener()
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.workers = []
        self.handshakes = 0
        self.accept_thread = threading.Thread(target=self.accept_loop, daemon=True)
        self.accept_thread.start()

    def accept_loop(self):
        accept_until(self.listener, self.stopping, self.start_worker)

    def start_worker(self, sock):
        worker = threading.Thread(target=self.serve, args=(sock,), daemon=True)
        self.workers.append(worker)
        worker.start()

    def serve(self, sock):
        with sock:
            sock.settimeout(CONNECTION_TIMEOUT)
            tls = fasttls.newtls("server", self.ctx)
            try:
                fasttls.helpers.init_responsefunc(sock, tls)()
                self.handshakes += 1
                request = fasttls.helpers.readfunc(sock, tls)()
                if request:
                    fasttls.helpers.writefunc(sock, tls)(
                        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except (OSError, ValueError):  # scanners hang up, send junk, probe old versions
                pass
            finally:
                fasttls.helpers.closefunc(tls)()

    def stop(self):
        self.stopping.set()
        self.accept_thread.join(JOIN_TIMEOUT)
        self.listener.close()
        for worker in self.workers:
            worker.join(JOIN_TIMEOUT)
        assert not self.accept_thread.is_alive()
        assert not any(worker.is_alive() for worker in self.workers), "a server thread hung"


class Scan:
    def __init__(self, result, output, returncode):
        self.result = result  # scan_result from the JSON output
        self.output = output  # sslyze's text output
        self.returncode = returncode

    def suites(self, version):
        entry = self.result[VERSION_FIELDS[version]]
        assert entry["status"] == "COMPLETED", entry
        return entry["result"]

    def accepted(self, version):
        return list(self.suites(version)["accepted_cipher_suites"])

    def plugin(self, name):
        entry = self.result[name]
        assert entry["status"] == "COMPLETED", entry
        return entry["result"]

    def compliance(self):
        """(compliant?, the issue lines) from the COMPLIANCE section of the text output."""
        section = self.output.split("COMPLIANCE AGAINST TLS CONFIGURATION", 1)
        assert len(section) == 2, "sslyze printed no compliance section:\n" + self.output
        text = section[1]
        issues = [line.strip() for line in text.splitlines() if line.strip().startswith("* ")]
        return bool(re.search(r":\s*OK - Compliant", text)), issues

    def summary(self):
        lines = ["sslyze scan of a default fasttls server (RSA-2048 certificate):"]
        for version in VERSION_FIELDS:
            accepted = self.accepted(version)
            if not self.suites(version)["is_tls_version_supported"]:
                lines.append(f"  {version:8} rejected")
                continue
            lines.append(f"  {version:8} accepted {len(accepted)} suites:")
            for suite in accepted:
                key = suite.get("ephemeral_key") or {}
                kex = " ".join(str(key[k]) for k in ("type_name", "curve_name", "size")
                               if key.get(k))
                lines.append(f"             {suite['cipher_suite']['name']:48} {kex}")
        curves = self.plugin("elliptic_curves")["supported_curves"] or []
        lines.append("  curves:  " + ", ".join(curve["name"] for curve in curves))
        reneg = self.plugin("session_renegotiation")
        facts = [
            ("compression supported", self.plugin("tls_compression")["supports_compression"]),
            ("heartbleed vulnerable",
             self.plugin("heartbleed")["is_vulnerable_to_heartbleed"]),
            ("CCS injection vulnerable",
             self.plugin("openssl_ccs_injection")["is_vulnerable_to_ccs_injection"]),
            ("ROBOT", self.plugin("robot")["robot_result"]),
            ("secure renegotiation", reneg["supports_secure_renegotiation"]),
            ("client renegotiation DoS",
             f"{reneg['is_vulnerable_to_client_renegotiation_dos']} "
             f"({reneg['client_renegotiations_success_count']} client renegotiations accepted)"),
            ("TLS_FALLBACK_SCSV", self.plugin("tls_fallback_scsv")["supports_fallback_scsv"]),
            ("extended master secret",
             self.plugin("tls_extended_master_secret")["supports_ems_extension"]),
        ]
        lines += [f"  {name + ':':32}{value}" for name, value in facts]
        compliant, issues = self.compliance()
        verdict = "compliant" if compliant else "NOT compliant"
        lines.append(f"  {'Mozilla intermediate:':32}{verdict}")
        lines += ["    " + issue for issue in issues]
        return "\n".join(lines)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    program = sslyze_program()
    directory = tmp_path_factory.mktemp("sslyze")
    chain, key, ca_path = rsa_2048_identity(directory)
    target = ScanTarget(chain, key)
    json_path = directory / "scan.json"
    try:
        proc = subprocess.run(
            [program, "--mozilla_config=intermediate", f"--certinfo_ca_file={ca_path}",
             f"--json_out={json_path}", f"127.0.0.1:{target.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=SCAN_TIMEOUT,
        )
    finally:
        target.stop()
    output = proc.stdout.decode("utf-8", "replace")
    assert json_path.exists(), f"sslyze wrote no JSON (exit {proc.returncode}):\n{output}"
    report = json.loads(json_path.read_text())
    (server,) = report["server_scan_results"]
    assert server["connectivity_status"] == "COMPLETED", server.get("connectivity_error_trace")
    assert server["scan_status"] == "COMPLETED", output
    assert target.handshakes > 0, "the scanner never completed a handshake with fasttls"
    result = Scan(server["scan_result"], output, proc.returncode)
    print("\n" + result.summary())
    return result


def test_no_ssl2_ssl3(scan):
    for version in ("SSLv2", "SSLv3"):
        assert not scan.suites(version)["is_tls_version_supported"], version
        assert scan.accepted(version) == []


def test_tls10_tls11_rejected(scan):
    for version in ("TLSv1.0", "TLSv1.1"):
        assert not scan.suites(version)["is_tls_version_supported"], version
        assert scan.accepted(version) == []


def test_tls12_and_tls13_offered(scan):
    assert scan.suites("TLSv1.2")["is_tls_version_supported"]
    assert scan.suites("TLSv1.3")["is_tls_version_supported"]


def test_no_weak_anonymous_export_or_null_suites(scan):
    for version in VERSION_FIELDS:
        for suite in scan.accepted(version):
            name = suite["cipher_suite"]["name"]
            assert not suite["cipher_suite"]["is_anonymous"], name
            assert suite["cipher_suite"]["key_size"] >= 128, name
            assert not any(marker in name.upper() for marker in map(str.upper, WEAK_MARKERS)), name
            if version != "TLSv1.3":  # forward secret, AEAD
                assert name.startswith(("TLS_ECDHE_", "TLS_DHE_")), name
                assert "_GCM_" in name or "CHACHA20_POLY1305" in name, name
            key = suite.get("ephemeral_key") or {}
            if key.get("type_name") == "DH":
                assert key["size"] >= 2048, (name, key["size"])
            if key.get("type_name") == "ECDH":
                assert key["size"] >= 253, (name, key)


def test_no_insecure_renegotiation(scan):
    reneg = scan.plugin("session_renegotiation")
    assert reneg["is_vulnerable_to_client_renegotiation_dos"] is False
    assert reneg["client_renegotiations_success_count"] == 0  # client renegotiation refused
    assert reneg["supports_secure_renegotiation"] is True  # RFC 5746 indication: fine


def test_no_compression(scan):
    assert scan.plugin("tls_compression")["supports_compression"] is False


def test_not_vulnerable_to_heartbleed(scan):
    assert scan.plugin("heartbleed")["is_vulnerable_to_heartbleed"] is False


def test_not_vulnerable_to_ccs_injection(scan):
    assert scan.plugin("openssl_ccs_injection")["is_vulnerable_to_ccs_injection"] is False


def test_not_vulnerable_to_robot(scan):
    assert scan.plugin("robot")["robot_result"] in (
        "NOT_VULNERABLE_NO_ORACLE", "NOT_VULNERABLE_RSA_NOT_SUPPORTED")


def test_downgrade_protection_and_extended_master_secret(scan):
    assert scan.plugin("tls_fallback_scsv")["supports_fallback_scsv"] is True
    assert scan.plugin("tls_extended_master_secret")["supports_ems_extension"] is True


def test_mozilla_intermediate_compliance(scan):
    compliant, issues = scan.compliance()
    assert compliant, "sslyze: not compliant with Mozilla intermediate:\n" + "\n".join(issues)
