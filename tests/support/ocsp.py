"""OCSP test fixtures: a small PKI whose leaf certificates name an OCSP responder
(authorityInfoAccess, which trustme cannot add: cryptography's x509 builder does it), and a
responder on loopback that is the real `openssl ocsp`.

Why not `openssl ocsp -port`: on OpenSSL 3.0 it takes a port number only and listens on every
interface (`ss -ltnp` shows `*:PORT`), which tests must not do. So the HTTP side is a tiny
server bound to 127.0.0.1, and every request it receives is answered by running
`openssl ocsp -index ... -reqin REQ -respout RESP` (the responder itself, minus its socket)."""
import datetime
import http.server
import subprocess
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

OPENSSL_TIMEOUT = 10  # seconds one `openssl ocsp` run may take


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Issued:
    """A certificate and its key, as PEM (`cert_pem`, `key_pem`, `chain_pem` with the CA)."""

    def __init__(self, cert, key, ca_cert=None):
        self.cert, self.key = cert, key
        self.cert_pem = _pem(cert)
        self.key_pem = _key_pem(key)
        self.chain_pem = self.cert_pem + (_pem(ca_cert) if ca_cert is not None else b"")
        self.serial = cert.serial_number


class PKI:
    """A CA; a delegated OCSP responder (OCSPSigning, issued by the CA); leaves for localhost
    that name `ocsp_url`; and a rogue self-signed signer nobody delegated to."""

    def __init__(self, directory, ocsp_url):
        self.directory = directory
        self.ocsp_url = ocsp_url
        self.ca = self._make("fasttls OCSP test CA", ca=True)
        self.responder = self._make("fasttls OCSP responder", issuer=self.ca, eku=True)
        self.rogue = self._make("rogue OCSP signer", ca=True)
        self.good = self._make("localhost", issuer=self.ca, leaf=True)
        self.good_rsa = self._make("localhost", issuer=self.ca, leaf=True, rsa_key=True)
        self.revoked = self._make("localhost", issuer=self.ca, leaf=True)
        self.other = self._make("localhost", issuer=self.ca, leaf=True)
        self.no_aia = self._make("localhost", issuer=self.ca, leaf=True, aia=False)
        self.ca_pem = self.ca.cert_pem
        self.write_index()
        self.files = {}
        for name in ("ca", "responder", "rogue"):
            issued = getattr(self, name)
            for kind, blob in (("cert", issued.cert_pem), ("key", issued.key_pem)):
                path = directory / f"{name}-{kind}.pem"
                path.write_bytes(blob)
                self.files[f"{name}-{kind}"] = path

    def _make(self, common_name, issuer=None, ca=False, eku=False, leaf=False, aia=True,
              rsa_key=False):
        key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if rsa_key
               else ec.generate_private_key(ec.SECP256R1()))
        now = _now()
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(common_name))
                   .issuer_name(issuer.cert.subject if issuer else _name(common_name))
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   # key usage on every certificate: Python 3.13's default contexts verify with
                   # VERIFY_X509_STRICT, which refuses a CA certificate without it
                   .add_extension(x509.KeyUsage(
                       digital_signature=True, content_commitment=False,
                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                       key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False),
                       critical=True))
        if eku:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        if leaf:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            if aia:
                builder = builder.add_extension(x509.AuthorityInformationAccess([
                    x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                           x509.UniformResourceIdentifier(self.ocsp_url))]),
                    critical=False)
        if ca or issuer is not None:
            builder = builder.add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        if issuer is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                critical=False)
        cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
        return Issued(cert, key, issuer.cert if issuer is not None and leaf else None)

    def write_index(self):
        """openssl ca's index.txt: good (V) and revoked (R) leaves; `good_rsa`, `other` and
        `no_aia` are good too."""
        expiry = (_now() + datetime.timedelta(days=2)).strftime("%y%m%d%H%M%SZ")
        revoked_at = (_now() - datetime.timedelta(minutes=30)).strftime("%y%m%d%H%M%SZ")
        lines = []
        for issued, status in ((self.good, "V"), (self.good_rsa, "V"), (self.other, "V"),
                               (self.no_aia, "V"), (self.revoked, "R")):
            subject = "/CN=" + issued.cert.subject.rfc4514_string()[3:]
            serial = f"{issued.serial:X}"
            serial = "0" * (len(serial) % 2) + serial  # BN_bn2hex's form: whole bytes
            lines.append("\t".join([status, expiry, revoked_at if status == "R" else "",
                                    serial, "unknown", subject]))
        self.index = self.directory / "index.txt"
        self.index.write_text("\n".join(lines) + "\n")
        (self.directory / "index.txt.attr").write_text("unique_subject = no\n")

    def expired_response(self, issued):
        """A response about `issued`, good but past its nextUpdate (openssl ocsp cannot
        backdate one), signed by the delegated responder."""
        now = _now()
        builder = (ocsp.OCSPResponseBuilder()
                   .add_response(cert=issued.cert, issuer=self.ca.cert, algorithm=hashes.SHA1(),
                                 cert_status=ocsp.OCSPCertStatus.GOOD,
                                 this_update=now - datetime.timedelta(days=1),
                                 next_update=now - datetime.timedelta(hours=1),
                                 revocation_time=None, revocation_reason=None)
                   .responder_id(ocsp.OCSPResponderEncoding.HASH, self.responder.cert)
                   .certificates([self.responder.cert]))
        response = builder.sign(self.responder.key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)


class Responder:
    """HTTP on 127.0.0.1 in front of `openssl ocsp`. `signer` is "responder" (delegated),
    "ca" or "rogue"; `minutes` the validity (nextUpdate) of its answers. `stall` makes it
    accept and never answer; `requests` counts the requests answered."""

    def __init__(self, openssl, tmp_path):
        self.openssl = openssl
        self.tmp_path = tmp_path
        self.signer = "responder"
        self.minutes = 10
        self.stall = threading.Event()
        self.requests = 0
        self.pki = None
        self._lock = threading.Lock()
        responder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if responder.stall.is_set():
                    responder.stall_released.wait(30)  # bounded: the test's timeout is shorter
                    return
                status, answer = responder.answer(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.stall_released = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def answer(self, request):
        with self._lock:
            n = self.requests
            req = self.tmp_path / f"req-{n}.der"
            resp = self.tmp_path / f"resp-{n}.der"
            req.write_bytes(request)
            files = self.pki.files
            done = subprocess.run(
                [self.openssl, "ocsp", "-index", str(self.pki.index),
                 "-CA", str(files["ca-cert"]),
                 "-rsigner", str(files[f"{self.signer}-cert"]),
                 "-rkey", str(files[f"{self.signer}-key"]),
                 "-reqin", str(req), "-respout", str(resp), "-nmin", str(self.minutes)],
                capture_output=True, timeout=OPENSSL_TIMEOUT)
            if done.returncode != 0 or not resp.exists():
                return 500, done.stderr
            self.requests += 1
            return 200, resp.read_bytes()

    def close(self):
        self.stall_released.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


def openssl_response(openssl, pki, issued, tmp_path, signer="responder", minutes=10):
    """A response about `issued` from `openssl ocsp` run directly (no HTTP): request made with
    `openssl ocsp -reqout`, answered with `-reqin/-respout`."""
    cert = tmp_path / f"subject-{issued.serial}.pem"
    cert.write_bytes(issued.cert_pem)
    req = tmp_path / f"direct-req-{issued.serial}.der"
    resp = tmp_path / f"direct-resp-{issued.serial}-{signer}.der"
    files = pki.files
    subprocess.run([openssl, "ocsp", "-issuer", str(files["ca-cert"]), "-cert", str(cert),
                    "-no_nonce", "-reqout", str(req)], check=True, capture_output=True,
                   timeout=OPENSSL_TIMEOUT)
    subprocess.run([openssl, "ocsp", "-index", str(pki.index), "-CA", str(files["ca-cert"]),
                    "-rsigner", str(files[f"{signer}-cert"]), "-rkey", str(files[f"{signer}-key"]),
                    "-reqin", str(req), "-respout", str(resp), "-nmin", str(minutes)],
                   check=True, capture_output=True, timeout=OPENSSL_TIMEOUT)
    return resp.read_bytes()
