/* fasttls engine: one C call per TLS operation over an OpenSSL SSL object.
 *
 * Each connection reads ciphertext straight from the caller's buffer and writes ciphertext into a
 * buffer of its own, through one custom BIO (no memory-BIO copy in between). Every operation
 * returns a status; "needs more data" is a status, never an error. */
#ifndef FASTTLS_ENGINE_H
#define FASTTLS_ENGINE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

/* Bumped whenever this header changes; fasttls/_version.py names the one the Python side
 * expects, so a checkout never runs against a compiled module of another engine. */
#define FASTTLS_ABI 10

/* Non-negative results are byte counts; negative ones are these statuses. */
#define FASTTLS_OK 0            /* operation complete */
#define FASTTLS_ERROR (-1)      /* fatal: see ssl_error, err_code, verify_* */
#define FASTTLS_CLOSED (-2)     /* the peer sent close_notify */
#define FASTTLS_WANT_READ (-3)  /* the handshake needs more ciphertext from the peer */
/* Statuses of the socket operations (fasttls_recv, fasttls_send, fasttls_handshake_fd). */
#define FASTTLS_WANT_WRITE (-4) /* the socket would block on send: c->out keeps what is unsent */
#define FASTTLS_EOF (-5)        /* recv() returned 0: the transport ended (no close_notify) */
#define FASTTLS_IO_ERROR (-6)   /* a system call failed: c->io_errno */
#define FASTTLS_TIMEOUT (-7)    /* timeout_ms elapsed */
/* The handshake waits for the application (fasttls_hello.c): c->hello_wants says for what. The
 * next fasttls_handshake / fasttls_handshake_fd call, once it is done, continues. */
#define FASTTLS_WANT_HELLO (-8)
/* Keyless (fasttls_keyless.c): the handshake waits for a signature, fasttls_sign_* say of what;
 * the next fasttls_handshake / fasttls_handshake_fd call, once it is answered or failed,
 * continues. It must be made on the thread that made the one that returned this. */
#define FASTTLS_WANT_SIGN (-9)
/* fasttls_sign_answer's results. */
#define FASTTLS_SIGN_OK 1
#define FASTTLS_SIGN_NONE 0             /* no signature was asked for */
#define FASTTLS_SIGN_BAD_LENGTH (-1)    /* the request is failed: wrong signature length */
#define FASTTLS_SIGN_BAD_SIGNATURE (-2) /* the request is failed: it does not verify */

/* What a server's client-hello callback stopped the handshake for (c->hello_wants bits). */
#define FASTTLS_HELLO_SESSION 0x1  /* look up session_key in the shared session store */
#define FASTTLS_HELLO_SNI 0x2      /* run the sni_callback for hello_name (fasttls_conn_sni_done) */

typedef struct fasttls_conn {
    SSL *ssl;
    /* Ciphertext waiting to be sent: everything the SSL object wrote. The caller takes it and
     * sets out_len to 0 (fasttls_write does that itself, returning the count). */
    char *out;
    size_t out_len;
    /* Plaintext produced by the last fasttls_read. */
    char *plain;
    size_t plain_len;
    /* The last failure, captured before the error queue is cleared. */
    int ssl_error;
    unsigned long err_code;
    long verify_code;
    int verify_depth;
    char verify_subject[256];
    /* Received ciphertext not yet consumed (e.g. data that came with the last handshake
     * flight): the next fasttls_read decrypts it. */
    size_t held_len;
    /* The errno of the system call behind the last FASTTLS_IO_ERROR. */
    int io_errno;
    /* After FASTTLS_WANT_HELLO: what the application must do before the next handshake call
     * (FASTTLS_HELLO_* bits; each is cleared by the call that hands its answer in). */
    unsigned int hello_wants;
    /* FASTTLS_HELLO_SESSION: the key to look up (a TLS 1.2 session ID, or a TLS 1.3 stateful
     * ticket's PSK identity, which is the session ID of the session it names). */
    unsigned char session_key[32];
    size_t session_key_len;
    /* FASTTLS_HELLO_SNI: the server name the client asked for ("" if none). */
    char hello_name[256];
    /* Private. */
    size_t out_cap, plain_cap;
    const unsigned char *in_ptr;  /* input being consumed during one call */
    size_t in_len;
    unsigned char *held;
    size_t held_cap;
    int from_held;                /* in_ptr points into held */
    /* Configuration locks (see fasttls_conn.c, "configuration locks"): the context the SSL was
     * made from, the contexts whose read lock the current step holds (each with a reference),
     * whether a step is running, and whether reads and writes must lock too. */
    SSL_CTX *first_ctx;
    SSL_CTX *locked[4];
    int n_locked;
    int in_step;
    int lock_io;
    int pha;                      /* post-handshake authentication enabled or requested */
    /* Full duplex (fasttls_io.c): io_mutex, initialised by fasttls_conn_enable_duplex, guards
     * the SSL object and `out` in the socket operations. */
    int duplex;
    pthread_mutex_t io_mutex;
    /* The buffer addresses the Python side was last given (fasttls_py_read/_py_write). */
    char *plain_told, *out_told;
    /* Interpreter exit (fasttls_conn.c, "in flight"): engine calls running on this connection,
     * and its place in the list of live connections that fasttls_quiesce looks through. */
    int busy, live;
    struct fasttls_conn *live_prev, *live_next;
    /* The client-hello callback (fasttls_hello.c): the FASTTLS_HELLO_* work already done for
     * this handshake, the session handed in for the lookup, and the sessions OpenSSL made
     * (serialised) for the application to store. */
    unsigned int hello_done;
    SSL_SESSION *found_session;
    struct fasttls_new_session *new_sessions;
    int hello_alert;              /* the sni_callback refused: the alert to fail with */
    /* Keyless (fasttls_keyless.c): the signing request of a connection of a keyless context. */
    struct fasttls_sign *sign;
} fasttls_conn;

int fasttls_init(void);
int fasttls_quiesce(int timeout_ms);
SSL_CTX *fasttls_ctx_new(void);
int fasttls_ctx_lock(SSL_CTX *ctx);
void fasttls_ctx_unlock(SSL_CTX *ctx);
int fasttls_ctx_set_alpn(SSL_CTX *ctx, const unsigned char *wire, size_t len);
int fasttls_ctx_set_keylog(SSL_CTX *ctx, const char *path);
/* fasttls_ctx_use_identity: replace every identity, or add one beside those of other key types. */
#define FASTTLS_IDENTITY_REPLACE 0
#define FASTTLS_IDENTITY_ADD 1
int fasttls_ctx_use_identity(SSL_CTX *ctx, const char *chain_pem, size_t chain_len,
                             const char *key_pem, size_t key_len, const char *password,
                             size_t password_len, int how);
int fasttls_ctx_load_dh_params(SSL_CTX *ctx, const char *pem, size_t len);
/* Session-ticket keys (fasttls_tickets.c), nginx's format: n keys, lens[i] bytes each (80 or
 * 48), one after the other in data, the current key first. n == 0: OpenSSL's own per-context
 * key again. 1 done, 0 out of memory, -1 a wrong length (the context keeps its keys). */
#define FASTTLS_TICKET_KEY_AES256 80
#define FASTTLS_TICKET_KEY_AES128 48
int fasttls_ctx_set_ticket_keys(SSL_CTX *ctx, const unsigned char *data, const size_t *lens,
                                size_t n);
/* out[4]: tickets issued, decrypted under the current key, under a previous key (renewed),
 * under an unknown key. Returns the number of keys set. */
int fasttls_ctx_ticket_stats(SSL_CTX *ctx, unsigned long *out);
int fasttls_lowest_version(void);
int fasttls_store_add_ca(X509_STORE *store, const unsigned char *data, size_t len, int pem);
X509_STORE *fasttls_store_new(const char *cafile, const char *capath, int defaults);
X509_STORE *fasttls_store_copy(X509_STORE *from, int default_dir);
X509 *fasttls_store_cert(SSL_CTX *ctx, int i, int *is_ca);
int fasttls_store_crl_count(SSL_CTX *ctx);
int fasttls_ctx_cipher_count(SSL_CTX *ctx);
const SSL_CIPHER *fasttls_ctx_cipher(SSL_CTX *ctx, int i);
size_t fasttls_conn_tls_unique(fasttls_conn *c, int server, unsigned char *buf, size_t len);
void fasttls_ctx_enable_sni_callback(SSL_CTX *ctx, int on);
/* Connections created afterwards report every TLS message (see fasttls_on_message). */
void fasttls_ctx_enable_msg_callback(SSL_CTX *ctx, int on);
/* TLS-PSK callbacks of connections created afterwards (see fasttls_on_psk_client/_server). */
void fasttls_ctx_enable_psk_client(SSL_CTX *ctx, int on);
int fasttls_ctx_enable_psk_server(SSL_CTX *ctx, int on, const char *hint);
const char *fasttls_conn_server_name(fasttls_conn *c);
int fasttls_conn_switch_ctx(fasttls_conn *c, SSL_CTX *ctx);
int fasttls_conn_set_session(fasttls_conn *c, SSL_SESSION *session);
const char *fasttls_conn_group(fasttls_conn *c);
/* TLS 1.3 post-handshake client authentication: a client offers it (before the handshake); a
 * server asks for a certificate (after it), the CertificateRequest going to c->out. */
int fasttls_conn_enable_pha(fasttls_conn *c);
int fasttls_conn_verify_client_post_handshake(fasttls_conn *c);

int fasttls_conn_init(fasttls_conn *c, SSL_CTX *ctx, int server);
void fasttls_conn_release(fasttls_conn *c);
int fasttls_conn_set_peer_name(fasttls_conn *c, const char *name, int is_ip, int check, int sni);
void fasttls_conn_set_verify(fasttls_conn *c, int mode);
int fasttls_handshake(fasttls_conn *c, const unsigned char *data, size_t len);
ptrdiff_t fasttls_read(fasttls_conn *c, const unsigned char *data, size_t len);
ptrdiff_t fasttls_write(fasttls_conn *c, const unsigned char *data, size_t len);
int fasttls_shutdown(fasttls_conn *c);
void fasttls_conn_release_buffers(fasttls_conn *c);

/* Socket I/O inside the engine (fasttls_io.c): one call does the system calls and the TLS work.
 * timeout_ms: 0 never blocks, -1 waits forever, else waits up to that long in all. EINTR comes
 * back as FASTTLS_IO_ERROR with io_errno EINTR, for the caller to run its signal handlers and
 * retry. c->out holds exactly the ciphertext not yet sent between calls.
 *
 * fasttls_recv: receive once into the connection's own input buffer and decrypt every complete
 * record: the plaintext length (in c->plain, as fasttls_read), or FASTTLS_WANT_READ (nothing
 * complete yet: only with timeout_ms == 0, which also means "would block"), CLOSED, EOF, ERROR,
 * IO_ERROR, TIMEOUT. With timeout_ms != 0 it receives until some plaintext or a status comes.
 * What reading produced for the peer (KeyUpdate reply, alert) is sent at once if the socket
 * takes it; else it waits in c->out, except that with timeout_ms != 0 a connection without
 * duplex waits for the socket to take it too. If sending it fails (IO_ERROR, TIMEOUT), the
 * plaintext decrypted with it is counted in plain_len, as for CLOSED and ERROR.
 * fasttls_send: encrypt all of data behind what is still unsent, send as much as the socket
 * takes (with timeout_ms != 0: all of it, waiting up to the deadline): the ciphertext bytes
 * still unsent (0: all went), or ERROR, IO_ERROR, TIMEOUT. len == 0: only flush.
 * fasttls_handshake_fd: handshake steps doing their own I/O until done, or until the socket
 * would block (timeout_ms == 0) or the deadline: OK, WANT_READ, WANT_WRITE, ERROR, EOF,
 * IO_ERROR, TIMEOUT, WANT_HELLO (the application's turn: see c->hello_wants), WANT_SIGN.
 * fasttls_conn_enable_duplex: one reader and one writer thread may then use these on one
 * connection at once; other calls on it go between fasttls_conn_lock and fasttls_conn_unlock. */
ptrdiff_t fasttls_recv(fasttls_conn *c, int fd, int timeout_ms);
ptrdiff_t fasttls_send(fasttls_conn *c, int fd, const unsigned char *data, size_t len,
                       int timeout_ms);
int fasttls_handshake_fd(fasttls_conn *c, int fd, int timeout_ms);
int fasttls_conn_enable_duplex(fasttls_conn *c);
void fasttls_conn_lock(fasttls_conn *c);
void fasttls_conn_unlock(fasttls_conn *c);
/* The Python side's read and write: fasttls_read and fasttls_write, but a result that needs more
 * than "n bytes at the address you know" comes back as FASTTLS_LOOK, so the fast path reads no
 * field of the struct. For fasttls_py_read: the plaintext buffer moved (plain is the new one,
 * plain_len counts it) or reading produced bytes to send (out_len); for fasttls_py_write: the
 * output buffer moved (the ciphertext is left in out/out_len, as if not taken). */
#define FASTTLS_LOOK (-16)
ptrdiff_t fasttls_py_read(fasttls_conn *c, const unsigned char *data, size_t len);
ptrdiff_t fasttls_py_write(fasttls_conn *c, const unsigned char *data, size_t len);

/* The client-hello callback and the shared session store (fasttls_hello.c).
 * fasttls_ctx_enable_session_store: server contexts look sessions up in, and give new ones to,
 * the application (no internal cache, no stateless tickets: TLS 1.3 tickets are stateful).
 * fasttls_conn_hand_in_session: the answer to FASTTLS_HELLO_SESSION, a serialised session or
 * NULL for "not found": 1 taken (or nothing to take), 0 refused (unreadable, or not the session
 * asked for: then treated as not found). fasttls_conn_new_session: the i-th session made since the last
 * fasttls_conn_clear_new_sessions (0 past the last): its ID, its DER and its timeout (s). */
int fasttls_ctx_enable_session_store(SSL_CTX *ctx, int on);
int fasttls_conn_hand_in_session(fasttls_conn *c, const unsigned char *der, size_t len);
int fasttls_conn_new_session(fasttls_conn *c, int i, const unsigned char **id, size_t *id_len,
                             const unsigned char **der, size_t *der_len, long *timeout);
void fasttls_conn_clear_new_sessions(fasttls_conn *c);
/* The answer to FASTTLS_HELLO_SNI (the connection switched context already, if it had to):
 * 0 to go on, else the alert the handshake fails with. */
void fasttls_conn_sni_done(fasttls_conn *c, int alert);

/* Keyless (fasttls_keyless.c). fasttls_ctx_use_keyless: a certificate chain (PEM) whose
 * private key is elsewhere, as fasttls_ctx_use_identity takes one with its key (same results).
 * After FASTTLS_WANT_SIGN: the message to sign, the TLS SignatureScheme, the key id (SHA-256 of
 * the certificate's SubjectPublicKeyInfo, 32 bytes); then either fasttls_sign_answer (checked
 * against the certificate: FASTTLS_SIGN_*) or fasttls_sign_fail. */
int fasttls_ctx_use_keyless(SSL_CTX *ctx, const char *chain_pem, size_t chain_len, int how);
int fasttls_ctx_is_keyless(SSL_CTX *ctx);
const unsigned char *fasttls_sign_data(fasttls_conn *c, size_t *len);
int fasttls_sign_scheme(fasttls_conn *c);
const unsigned char *fasttls_sign_key_id(fasttls_conn *c);
int fasttls_sign_answer(fasttls_conn *c, const unsigned char *sig, size_t len);
void fasttls_sign_fail(fasttls_conn *c);
/* Paused jobs of connections released on another thread, waiting for their own thread's next
 * handshake step to end them (see fasttls_keyless.c, "ending paused jobs"). */
int fasttls_keyless_orphans(void);

/* Sealing session blobs with AES-256-GCM (fasttls_seal.c). A key is 32 bytes, copied into
 * memory of its own and wiped by fasttls_seal_key_free. fasttls_seal writes header | nonce |
 * ciphertext | tag (fasttls_sealed_size bytes) authenticating header and aad too; fasttls_unseal
 * returns the plaintext length, or -1 if the blob is not authentic under the key. */
typedef struct fasttls_seal_key fasttls_seal_key;
fasttls_seal_key *fasttls_seal_key_new(const unsigned char *secret, size_t len);
void fasttls_seal_key_free(fasttls_seal_key *k);
size_t fasttls_sealed_size(size_t header_len, size_t plain_len);
ptrdiff_t fasttls_seal(const fasttls_seal_key *k, const unsigned char *header, size_t header_len,
                       const unsigned char *aad, size_t aad_len, const unsigned char *plain,
                       size_t len, unsigned char *out);
ptrdiff_t fasttls_unseal(const fasttls_seal_key *k, const unsigned char *sealed, size_t len,
                         size_t header_len, const unsigned char *aad, size_t aad_len,
                         unsigned char *out);

int fasttls_make_self_signed(const char *hostname, char **cert_pem, size_t *cert_len,
                             char **key_pem, size_t *key_len);
void fasttls_free(void *p);

/* Certificate decoding for getpeercert(); the peer's chains; the ciphers both ends offered. */
X509 *fasttls_peer_certificate(const SSL *ssl);
X509 *fasttls_conn_chain_cert(fasttls_conn *c, int verified, int i);
int fasttls_conn_shared_ciphers(fasttls_conn *c, const SSL_CIPHER **out, int max);
int fasttls_x509_der(X509 *x, unsigned char **der);
int fasttls_name_entry(X509_NAME *name, int i, int *set, char *field, size_t field_len,
                       unsigned char **value);
int fasttls_x509_time(X509 *x, int not_after, char *buf, size_t len);
int fasttls_x509_serial(X509 *x, char *buf, size_t len);
int fasttls_x509_san(X509 *x, int i, int *type, unsigned char **value);
X509_NAME *fasttls_x509_san_dirname(X509 *x, int i);
/* fasttls_x509_uri: which URIs (authorityInfoAccess, crlDistributionPoints). */
#define FASTTLS_URI_OCSP 0
#define FASTTLS_URI_CA_ISSUERS 1
#define FASTTLS_URI_CRL 2
int fasttls_x509_uri(X509 *x, int which, int i, unsigned char **value);

/* OCSP stapling (fasttls_ocsp.c). fasttls_ocsp_check's results; a failed require-mode handshake
 * reports one through fasttls_conn_ocsp_failure. */
#define FASTTLS_OCSP_GOOD 0
#define FASTTLS_OCSP_MALFORMED 1     /* not a DER OCSP response */
#define FASTTLS_OCSP_UNSUCCESSFUL 2  /* responseStatus is not "successful" (tryLater, ...) */
#define FASTTLS_OCSP_BAD_SIGNATURE 3 /* not signed by the issuer or a responder it delegated */
#define FASTTLS_OCSP_NOT_FOR_CERT 4  /* no status in it for this certificate */
#define FASTTLS_OCSP_REVOKED 5
#define FASTTLS_OCSP_UNKNOWN 6       /* the responder does not know the certificate */
#define FASTTLS_OCSP_EXPIRED 7       /* past nextUpdate, or thisUpdate in the future */
#define FASTTLS_OCSP_MISSING 8       /* required, and the server stapled none */
#define FASTTLS_OCSP_NO_ISSUER 9     /* the issuer of the certificate is not known */
int fasttls_ocsp_check(const unsigned char *der, size_t len, X509 *leaf, X509 *issuer,
                       int64_t *this_update, int64_t *next_update);
int fasttls_ocsp_request(X509 *leaf, X509 *issuer, unsigned char *buf, size_t cap);
int fasttls_ocsp_is_about(const unsigned char *der, size_t len, X509 *leaf, X509 *issuer);
X509 *fasttls_ctx_cert(SSL_CTX *ctx, int i, X509 **issuer);
int fasttls_ctx_set_ocsp_response(SSL_CTX *ctx, X509 *leaf, const unsigned char *der,
                                  size_t len);
int fasttls_ctx_set_ocsp_client(SSL_CTX *ctx, int request, int require);
int fasttls_conn_request_ocsp(fasttls_conn *c);
long fasttls_conn_ocsp_response(fasttls_conn *c, const unsigned char **der);
int fasttls_conn_ocsp_failure(fasttls_conn *c);

/* Signing with a key held in this process (fasttls_sign.c; the key server of keyless TLS).
 * fasttls_key_load: a private key from PEM (password may be NULL), only of the types below, else
 * NULL with the cause on the error queue. The key ids are SHA-256 of the SubjectPublicKeyInfo
 * DER (32 bytes into `out`); fasttls_cert_key_id takes the first certificate of a PEM buffer.
 * fasttls_key_sign signs `data` (the whole message: it hashes) for a TLS SignatureScheme:
 * the signature's length, or FASTTLS_KEY_BAD_SCHEME (the scheme is unknown or does not fit the
 * key), FASTTLS_KEY_SHORT_BUFFER (sig_cap < fasttls_key_max_signature), FASTTLS_ERROR (the
 * cause on the error queue). A loaded key may sign on several threads at once. */
#define FASTTLS_KEY_UNSUPPORTED 0
#define FASTTLS_KEY_P256 1
#define FASTTLS_KEY_P384 2
#define FASTTLS_KEY_RSA 3
#define FASTTLS_SCHEME_RSA_PKCS1_SHA256 0x0401
#define FASTTLS_SCHEME_RSA_PKCS1_SHA384 0x0501
#define FASTTLS_SCHEME_RSA_PKCS1_SHA512 0x0601
#define FASTTLS_SCHEME_ECDSA_SECP256R1_SHA256 0x0403
#define FASTTLS_SCHEME_ECDSA_SECP384R1_SHA384 0x0503
#define FASTTLS_SCHEME_RSA_PSS_RSAE_SHA256 0x0804
#define FASTTLS_SCHEME_RSA_PSS_RSAE_SHA384 0x0805
#define FASTTLS_SCHEME_RSA_PSS_RSAE_SHA512 0x0806
#define FASTTLS_KEY_BAD_SCHEME (-20)
#define FASTTLS_KEY_SHORT_BUFFER (-21)
EVP_PKEY *fasttls_key_load(const char *pem, size_t len, const char *password, size_t password_len);
void fasttls_key_free(EVP_PKEY *key);
int fasttls_key_type(EVP_PKEY *key);
int fasttls_key_id(EVP_PKEY *key, unsigned char *out);
int fasttls_cert_key_id(const char *pem, size_t len, unsigned char *out);
size_t fasttls_key_max_signature(EVP_PKEY *key);
int fasttls_key_fits_scheme(EVP_PKEY *key, int scheme);
ptrdiff_t fasttls_key_sign(EVP_PKEY *key, int scheme, const unsigned char *data, size_t len,
                           unsigned char *sig, size_t sig_cap);

#endif
