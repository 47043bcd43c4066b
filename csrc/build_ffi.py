"""Builds `_fasttls`, a top-level module: the C engine plus the few OpenSSL calls the Python side makes itself.

Run by setuptools through `cffi_modules` (API mode: compiled against the headers at install).
FASTTLS_OPENSSL_DIR points the build at an OpenSSL outside the compiler's default paths (its
`include/` and `lib/`), e.g. `$(brew --prefix openssl@3)` on macOS.
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

INSTALL_HINT = (
    "Install the OpenSSL development headers (>= 1.1.1): Debian/Ubuntu `apt-get install "
    "libssl-dev`, Fedora/RHEL `dnf install openssl-devel`, macOS `brew install openssl@3` and then "
    "`export FASTTLS_OPENSSL_DIR=$(brew --prefix openssl@3)`. FASTTLS_OPENSSL_DIR may point at any "
    "OpenSSL installation prefix (with include/ and lib/)."
)
COMPILER_HINT = (
    "Install a C compiler: Debian/Ubuntu `apt-get install gcc` (or build-essential), Fedora "
    "`dnf install gcc`, macOS `xcode-select --install`; or point CC at one."
)


def openssl_paths():
    """(include_dirs, library_dirs) from FASTTLS_OPENSSL_DIR, or empty for the default paths."""
    prefix = os.environ.get("FASTTLS_OPENSSL_DIR")
    if not prefix:
        return [], []
    prefix = pathlib.Path(prefix)
    libdirs = [str(p) for p in (prefix / "lib", prefix / "lib64") if p.is_dir()]
    return [str(prefix / "include")], libdirs


def _compiler_command(compiler=None):
    cc = compiler or os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def check_build_environment(compiler=None, include_dirs=None):
    """Stop with one clear message if no C compiler works or the OpenSSL headers are missing."""
    if include_dirs is None:
        include_dirs = openssl_paths()[0]
    prefix = os.environ.get("FASTTLS_OPENSSL_DIR")
    if prefix and not pathlib.Path(prefix, "include", "openssl", "ssl.h").is_file():
        raise SystemExit(
            f"fasttls: FASTTLS_OPENSSL_DIR={prefix} has no include/openssl/ssl.h.\n{INSTALL_HINT}"
        )
    cmd = _compiler_command(compiler)
    if shutil.which(cmd[0]) is None:
        raise SystemExit(f"fasttls: no C compiler found ({cmd[0]!r} is not on PATH). {COMPILER_HINT}")
    with tempfile.TemporaryDirectory() as tmp:
        plain = pathlib.Path(tmp, "plain.c")
        plain.write_text("int main(void) { return 0; }\n")
        probe = pathlib.Path(tmp, "probe.c")
        probe.write_text(
            "#include <openssl/ssl.h>\n"
            "#if OPENSSL_VERSION_NUMBER < 0x10101000L\n#error too old\n#endif\n"
            "int main(void) { return 0; }\n"
        )
        if _compile(cmd, plain, tmp, []) is not None:
            raise SystemExit(f"fasttls: the C compiler {cmd[0]!r} does not work. {COMPILER_HINT}")
        error = _compile(cmd, probe, tmp, include_dirs)
        if error is not None:
            raise SystemExit(
                "fasttls: cannot compile against OpenSSL >= 1.1.1 headers (openssl/ssl.h).\n"
                f"{INSTALL_HINT}\nCompiler said: {error.strip()[-500:]}"
            )


def _compile(cmd, source, tmp, include_dirs):
    """None on success, else the compiler's message."""
    args = cmd + ["-c", str(source), "-o", str(pathlib.Path(tmp, "out.o"))]
    args += [f"-I{d}" for d in include_dirs]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    except OSError as exc:
        return str(exc)
    return None if done.returncode == 0 else done.stderr or done.stdout


def engine_cdef():
    """The engine header as cffi wants it: no preprocessor lines, private fields elided."""
    header = (HERE / "fasttls_engine.h").read_text()
    body = header[header.index("#define FASTTLS_OK") : header.rindex("#endif")]
    body = re.sub(r"/\* Private\. \*/.*?(?=\} fasttls_conn;)", "...;\n", body, flags=re.S)
    return re.sub(r"\((-\d+)\)", r"\1", body)  # cdef takes plain numbers: (-1) -> -1


# What Python calls directly; everything on the data path goes through the fasttls_* engine.
CDEF_OPENSSL = """
/* openssl/opensslv.h, crypto.h */
static const long OPENSSL_VERSION_NUMBER;
static const int OPENSSL_VERSION;
const char *OpenSSL_version(int);

/* openssl/x509.h, x509_vfy.h */
typedef ... X509;
typedef ... EVP_PKEY;
typedef ... X509_NAME;
typedef ... X509_STORE;
typedef ... X509_VERIFY_PARAM;
void X509_STORE_free(X509_STORE *);
int X509_STORE_up_ref(X509_STORE *);
unsigned long X509_VERIFY_PARAM_get_flags(const X509_VERIFY_PARAM *);
int X509_VERIFY_PARAM_set_flags(X509_VERIFY_PARAM *, unsigned long);
int X509_VERIFY_PARAM_clear_flags(X509_VERIFY_PARAM *, unsigned long);
static const int GEN_EMAIL;
static const int GEN_DNS;
static const int GEN_URI;
static const int GEN_IPADD;
static const int GEN_RID;
static const int GEN_DIRNAME;
void X509_NAME_free(X509_NAME *);
void X509_free(X509 *);
X509_NAME *X509_get_subject_name(const X509 *);
X509_NAME *X509_get_issuer_name(const X509 *);
int X509_NAME_entry_count(const X509_NAME *);
long X509_get_version(const X509 *);
const char *X509_verify_cert_error_string(long);

/* openssl/ssl.h */
typedef ... SSL_CTX;
typedef ... SSL;
typedef ... SSL_CIPHER;
typedef ... SSL_SESSION;
static const int SSL_VERIFY_NONE;
static const int SSL_VERIFY_PEER;
static const int SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
static const int SSL_VERIFY_CLIENT_ONCE;
static const int SSL_VERIFY_POST_HANDSHAKE;
static const int SSL_ERROR_SSL;
static const int SSL_ERROR_SYSCALL;
static const int SSL_ERROR_ZERO_RETURN;
static const int SSL_RECEIVED_SHUTDOWN;
static const int SSL_SENT_SHUTDOWN;
static const int SSL3_VERSION;
static const int TLS1_VERSION;
static const int TLS1_1_VERSION;
static const int TLS1_2_VERSION;
static const int TLS1_3_VERSION;
void SSL_CTX_free(SSL_CTX *);
int SSL_CTX_set_cipher_list(SSL_CTX *, const char *);
int SSL_CTX_set_ciphersuites(SSL_CTX *, const char *);
int SSL_CTX_load_verify_locations(SSL_CTX *, const char *, const char *);
int SSL_CTX_set_default_verify_paths(SSL_CTX *);
int SSL_CTX_set_min_proto_version(SSL_CTX *, int);
int SSL_CTX_set_max_proto_version(SSL_CTX *, int);
int SSL_CTX_get_min_proto_version(SSL_CTX *);
int SSL_CTX_get_max_proto_version(SSL_CTX *);
const char *SSL_get_version(const SSL *);
const SSL_CIPHER *SSL_get_current_cipher(const SSL *);
const char *SSL_CIPHER_get_name(const SSL_CIPHER *);
const char *SSL_CIPHER_get_version(const SSL_CIPHER *);
int SSL_CIPHER_get_bits(const SSL_CIPHER *, int *);
void SSL_get0_alpn_selected(const SSL *, const unsigned char **, unsigned int *);
int SSL_session_reused(const SSL *);
SSL_SESSION *SSL_get1_session(SSL *);
int SSL_set_session(SSL *, SSL_SESSION *);
void SSL_SESSION_free(SSL_SESSION *);
int SSL_SESSION_is_resumable(const SSL_SESSION *);
/* For the stdlib's SSLSession attributes (id, time, timeout, has_ticket, ticket_lifetime_hint). */
const unsigned char *SSL_SESSION_get_id(const SSL_SESSION *, unsigned int *);
long SSL_SESSION_get_time(const SSL_SESSION *);
long SSL_SESSION_get_timeout(const SSL_SESSION *);
int SSL_SESSION_has_ticket(const SSL_SESSION *);
unsigned long SSL_SESSION_get_ticket_lifetime_hint(const SSL_SESSION *);
int SSL_is_init_finished(const SSL *);
static const long SSL_MODE_RELEASE_BUFFERS;
long SSL_CTX_set_mode(SSL_CTX *, long);
long SSL_CTX_clear_mode(SSL_CTX *, long);
uint64_t SSL_CTX_get_options(const SSL_CTX *);
uint64_t SSL_CTX_set_options(SSL_CTX *, uint64_t);
uint64_t SSL_CTX_clear_options(SSL_CTX *, uint64_t);
int SSL_CTX_set1_groups_list(SSL_CTX *, const char *);
int SSL_CTX_set_num_tickets(SSL_CTX *, size_t);
size_t SSL_CTX_get_num_tickets(const SSL_CTX *);
void SSL_CTX_set1_cert_store(SSL_CTX *, X509_STORE *);
X509_STORE *SSL_CTX_get_cert_store(const SSL_CTX *);
X509_VERIFY_PARAM *SSL_CTX_get0_param(SSL_CTX *);
long SSL_CTX_sess_number(SSL_CTX *);
long SSL_CTX_sess_connect(SSL_CTX *);
long SSL_CTX_sess_connect_good(SSL_CTX *);
long SSL_CTX_sess_connect_renegotiate(SSL_CTX *);
long SSL_CTX_sess_accept(SSL_CTX *);
long SSL_CTX_sess_accept_good(SSL_CTX *);
long SSL_CTX_sess_accept_renegotiate(SSL_CTX *);
long SSL_CTX_sess_hits(SSL_CTX *);
long SSL_CTX_sess_misses(SSL_CTX *);
long SSL_CTX_sess_timeouts(SSL_CTX *);
long SSL_CTX_sess_cache_full(SSL_CTX *);
uint32_t SSL_CIPHER_get_id(const SSL_CIPHER *);
char *SSL_CIPHER_description(const SSL_CIPHER *, char *, int);
int SSL_CIPHER_is_aead(const SSL_CIPHER *);
int SSL_CIPHER_get_cipher_nid(const SSL_CIPHER *);
int SSL_CIPHER_get_digest_nid(const SSL_CIPHER *);
int SSL_CIPHER_get_kx_nid(const SSL_CIPHER *);
int SSL_CIPHER_get_auth_nid(const SSL_CIPHER *);
int SSL_get_shutdown(const SSL *);

/* openssl/objects.h */
static const int NID_undef;
const char *OBJ_nid2ln(int);

/* openssl/pem.h: the size of OpenSSL's password buffer, the longest password it takes */
static const int PEM_BUFSIZE;

/* openssl/err.h */
static const int ERR_LIB_SYS;
static const int ERR_LIB_PEM;
static const int ERR_LIB_X509;
static const int ERR_LIB_X509V3;
static const int ERR_LIB_ASN1;
static const int ERR_LIB_EVP;
static const int ERR_LIB_SSL;
static const int ERR_LIB_BIO;
static const int ERR_LIB_PKCS12;
static const int ERR_LIB_RSA;
static const int ERR_LIB_EC;
int ERR_GET_LIB(unsigned long);
int ERR_GET_REASON(unsigned long);
const char *ERR_reason_error_string(unsigned long);
const char *ERR_lib_error_string(unsigned long);
unsigned long ERR_peek_last_error(void);
void ERR_clear_error(void);

"""

VERSION = re.search(r'__version__ = "(.+)"', (HERE.parent / "fasttls" / "_version.py").read_text()).group(1)

ENGINE_SOURCES = ("fasttls_bio.c", "fasttls_conn.c", "fasttls_ctx.c", "fasttls_hello.c",
                  "fasttls_io.c", "fasttls_keyless.c", "fasttls_ocsp.c", "fasttls_seal.c",
                  "fasttls_sign.c", "fasttls_tickets.c", "fasttls_x509.c")

ffibuilder = FFI()
CDEF_CALLBACKS = """
const char *fasttls_build_version(void);
static const int FASTTLS_ABI;
extern "Python+C" void fasttls_on_message(fasttls_conn *, int, int, int, const void *, size_t);
extern "Python+C" unsigned int fasttls_on_psk_client(SSL_CTX *, const char *, char *, unsigned int,
                                                    unsigned char *, unsigned int);
extern "Python+C" unsigned int fasttls_on_psk_server(SSL_CTX *, const char *, unsigned char *,
                                                    unsigned int);
"""

ffibuilder.cdef(CDEF_OPENSSL + engine_cdef() + CDEF_CALLBACKS)

_include_dirs, _library_dirs = openssl_paths()
ffibuilder.set_source(
    # Top level, beside the pure-Python package: a checkout's fasttls/ (on sys.path when run from
    # the repository root) never shadows the compiled part installed in site-packages.
    "_fasttls",
    '#include "fasttls_engine.h"\n#include <openssl/err.h>\n#include <openssl/pem.h>\n'
    '#include <openssl/x509v3.h>\n'
    # Checked at import: a stale build of another version must not load silently.
    f'static const char *fasttls_build_version(void) {{ return "{VERSION}"; }}\n',
    # The engine, one file per concern (fasttls_internal.h lists them).
    sources=[os.path.relpath(HERE / name) for name in ENGINE_SOURCES],
    include_dirs=[os.path.relpath(HERE)] + _include_dirs,
    library_dirs=_library_dirs,
    runtime_library_dirs=_library_dirs if sys.platform != "win32" else [],
    libraries=["ssl", "crypto"],
    extra_compile_args=["-O2"] if sys.platform != "win32" else [],
)

# setuptools imports this module for metadata commands too; only a real build needs a compiler.
if not {"egg_info", "dist_info", "sdist"} & set(sys.argv[1:]):
    check_build_environment()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
