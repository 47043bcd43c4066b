/* fasttls engine: see fasttls_engine.h for the model.
 *
 * Why a custom BIO rather than OpenSSL's memory BIOs: incoming ciphertext is read by the SSL
 * object straight out of the caller's buffer (one copy fewer than writing it into a memory BIO
 * first), and outgoing ciphertext lands in a per-connection buffer that is reused, never zeroed,
 * and handed to Python in one piece. Both directions share one BIO. */
#include "fasttls_engine.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* OpenSSL 1.1.1 brought TLS 1.3, SSL_read_ex/SSL_write_ex and the keylog callback. */
#if OPENSSL_VERSION_NUMBER < 0x10101000L
#error "fasttls needs OpenSSL 1.1.1 or newer"
#endif

/* One record's worth of plaintext: the most a single SSL_read_ex can return. */
#define RECORD_PLAIN_MAX 16384
/* Buffers larger than this are given back after use instead of being kept for the next call, so a
 * single 64 MiB transfer does not pin 64 MiB per connection. 1 MiB writes stay within it. */
#define KEEP_BUFFER_MAX (4u << 20)

/* Per-SSL_CTX state that callbacks need, freed with the SSL_CTX (ex_data free callback), so it
 * lives exactly as long as any connection made from the context. */
struct ctx_extra {
    /* Configuration changes (writers) against connection creation and handshake steps
     * (readers): OpenSSL frees the cipher lists and the trust store that a handshake in another
     * thread is reading when the context's are replaced. */
    CRYPTO_RWLOCK *conf_lock;
    CRYPTO_RWLOCK *lock;       /* guards the next fields, read by callbacks */
    unsigned char *alpn;       /* server preference list, wire format */
    size_t alpn_len;
    char *keylog_path;
    /* The current certificate, key and chain, and whether to serve them per connection. */
    X509 *id_cert;
    EVP_PKEY *id_key;
    STACK_OF(X509) *id_chain;
    int exclusive_identity;
};

static BIO_METHOD *conn_bio_method;
static int ctx_extra_index = -1;

static int identity_callback(SSL *ssl, void *arg);

/* Interpreter exit: OpenSSL's own atexit handler tears the library down while daemon threads
 * may still be inside it. fasttls_quiesce, run by Python's atexit in the main thread before
 * that, waits for the operations in flight to leave; from then on, other threads entering
 * fasttls are parked (the process is about to end them, as CPython parks daemon threads that
 * want the GIL back), and only the exiting thread itself may still use it. */
static int shutting_down;
static long in_flight;
static pthread_t exiting_thread;

static int enter(void)
{
    struct timespec forever = {3600, 0};
    __atomic_add_fetch(&in_flight, 1, __ATOMIC_ACQ_REL);
    if (!__atomic_load_n(&shutting_down, __ATOMIC_ACQUIRE) ||
        pthread_equal(pthread_self(), exiting_thread))
        return 1;
    __atomic_sub_fetch(&in_flight, 1, __ATOMIC_RELEASE);
    for (;;)
        nanosleep(&forever, NULL);
    return 0;
}

static void leave(void)
{
    __atomic_sub_fetch(&in_flight, 1, __ATOMIC_RELEASE);
}

int fasttls_quiesce(int timeout_ms)
{
    struct timespec pause = {0, 1000000};
    exiting_thread = pthread_self();
    __atomic_store_n(&shutting_down, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&in_flight, __ATOMIC_ACQUIRE) > 0 && timeout_ms-- > 0)
        nanosleep(&pause, NULL);
    return __atomic_load_n(&in_flight, __ATOMIC_ACQUIRE) == 0;
}


static int reserve(char **buf, size_t *cap, size_t need)
{
    char *p;
    size_t n;
    if (need <= *cap)
        return 1;
    n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    p = realloc(*buf, n);
    if (p == NULL)
        return 0;
    *buf = p;
    *cap = n;
    return 1;
}

static void shrink(char **buf, size_t *cap, size_t len)
{
    if (*cap > KEEP_BUFFER_MAX && len == 0) {
        free(*buf);
        *buf = NULL;
        *cap = 0;
    }
}

/* ---- the connection BIO ---- */

static int conn_bio_write(BIO *b, const char *data, int len)
{
    fasttls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (!reserve(&c->out, &c->out_cap, c->out_len + (size_t)len))
        return -1;
    memcpy(c->out + c->out_len, data, (size_t)len);
    c->out_len += (size_t)len;
    return len;
}

static int conn_bio_read(BIO *b, char *data, int len)
{
    fasttls_conn *c = BIO_get_data(b);
    size_t n;
    BIO_clear_retry_flags(b);
    if (c->in_len == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    n = (size_t)len < c->in_len ? (size_t)len : c->in_len;
    memcpy(data, c->in_ptr, n);
    c->in_ptr += n;
    c->in_len -= n;
    return (int)n;
}

static long conn_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    fasttls_conn *c = BIO_get_data(b);
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return (long)c->in_len;
    default:
        return 0;
    }
}

static int conn_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int conn_bio_destroy(BIO *b)
{
    BIO_set_data(b, NULL);
    return 1;
}

/* Input for one call: straight from the caller's bytes unless earlier input is still held, in
 * which case the new bytes are appended to it so the stream stays in order. */
static int feed(fasttls_conn *c, const unsigned char *data, size_t len)
{
    if (c->held_len == 0) {
        c->in_ptr = data;
        c->in_len = len;
        c->from_held = 0;
        return 1;
    }
    if (len) {
        if (!reserve((char **)&c->held, &c->held_cap, c->held_len + len))
            return 0;
        memcpy(c->held + c->held_len, data, len);
        c->held_len += len;
    }
    c->in_ptr = c->held;
    c->in_len = c->held_len;
    c->from_held = 1;
    return 1;
}

/* After the call: keep what the SSL object did not consume (e.g. application data that arrived
 * with the last handshake flight) for the next call; the caller's buffer is gone by then. */
static int keep_rest(fasttls_conn *c)
{
    int ok = 1;
    if (c->in_len == 0) {
        c->held_len = 0;
    } else if (c->from_held) {
        memmove(c->held, c->in_ptr, c->in_len);
        c->held_len = c->in_len;
    } else if (reserve((char **)&c->held, &c->held_cap, c->in_len)) {
        memcpy(c->held, c->in_ptr, c->in_len);
        c->held_len = c->in_len;
    } else {
        ok = 0;
    }
    c->in_ptr = NULL;
    c->in_len = 0;
    return ok;
}

/* Why an operation stopped comes from SSL_get_error, which reads this thread's error queue.
 * The handshake and shutdown empty the queue first; reads and writes do not, because emptying it
 * costs more than encrypting a small record, and every path here that leaves errors on the
 * queue (fail(), the configuration calls) empties it before returning. */

static int fail(fasttls_conn *c, int ssl_error)
{
    c->ssl_error = ssl_error;
    c->err_code = ERR_peek_last_error();
    if (c->verify_code == 0 && c->err_code != 0)
        c->verify_code = SSL_get_verify_result(c->ssl);
    ERR_clear_error();
    return FASTTLS_ERROR;
}

static int fail_nomem(fasttls_conn *c)
{
    ERR_raise(ERR_LIB_SSL, ERR_R_MALLOC_FAILURE);
    return fail(c, SSL_ERROR_SSL);
}

/* ---- callbacks ---- */

/* Remembers the first verification failure with the subject of the certificate concerned, for
 * the error message; OpenSSL keeps only the last error code. */
static int verify_callback(int ok, X509_STORE_CTX *store)
{
    SSL *ssl;
    fasttls_conn *c;
    X509 *cert;
    if (ok)
        return ok;
    ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    c = ssl ? SSL_get_app_data(ssl) : NULL;
    if (c != NULL && c->verify_code == 0) {
        c->verify_code = X509_STORE_CTX_get_error(store);
        c->verify_depth = X509_STORE_CTX_get_error_depth(store);
        cert = X509_STORE_CTX_get_current_cert(store);
        if (cert != NULL)
            X509_NAME_oneline(X509_get_subject_name(cert), c->verify_subject,
                              sizeof(c->verify_subject));
    }
    return ok;
}

/* Server ALPN: the first protocol of our list that the client offers. *out points into the
 * client's list (owned by the SSL object), never into ours, which another thread may replace. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    struct ctx_extra *x = arg;
    int result = SSL_TLSEXT_ERR_NOACK;
    size_t i, j;
    (void)ssl;
    if (!CRYPTO_THREAD_read_lock(x->lock))
        return result;
    for (i = 0; x->alpn != NULL && i < x->alpn_len && result != SSL_TLSEXT_ERR_OK;
         i += 1 + x->alpn[i]) {
        for (j = 0; j < inlen && j + 1 + in[j] <= inlen; j += 1 + in[j]) {
            if (in[j] == x->alpn[i] && memcmp(in + j + 1, x->alpn + i + 1, in[j]) == 0) {
                *out = in + j + 1;
                *outlen = in[j];
                result = SSL_TLSEXT_ERR_OK;
                break;
            }
        }
    }
    CRYPTO_THREAD_unlock(x->lock);
    return result;
}

static void keylog_line(const SSL *ssl, const char *line)
{
    struct ctx_extra *x = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_extra_index);
    FILE *f;
    /* A write lock: it also keeps lines from two threads from interleaving. */
    if (x == NULL || !CRYPTO_THREAD_write_lock(x->lock))
        return;
    if (x->keylog_path != NULL && (f = fopen(x->keylog_path, "a")) != NULL) {
        fputs(line, f);
        fputc('\n', f);
        fclose(f);
    }
    CRYPTO_THREAD_unlock(x->lock);
}

static CRYPTO_RWLOCK *conf_lock(const SSL_CTX *ctx)
{
    struct ctx_extra *x = SSL_CTX_get_ex_data(ctx, ctx_extra_index);
    return x != NULL ? x->conf_lock : NULL;
}

/* For the Python side, around every change to the context. Not re-entrant. */
int fasttls_ctx_lock(SSL_CTX *ctx)
{
    CRYPTO_RWLOCK *lock = conf_lock(ctx);
    return lock != NULL && CRYPTO_THREAD_write_lock(lock);
}

void fasttls_ctx_unlock(SSL_CTX *ctx)
{
    CRYPTO_RWLOCK *lock = conf_lock(ctx);
    if (lock != NULL)
        CRYPTO_THREAD_unlock(lock);
}

static int read_lock(CRYPTO_RWLOCK *lock)
{
    return lock == NULL || CRYPTO_THREAD_read_lock(lock);
}

static void unlock(CRYPTO_RWLOCK *lock)
{
    if (lock != NULL)
        CRYPTO_THREAD_unlock(lock);
}

/* Server-side SNI: the Python layer (an `extern "Python+C"` function of the cffi module) picks
 * the context for the name the client asked for. It runs with the GIL held; its exceptions are
 * kept by the Python side and re-raised after the handshake call returns. */
int fasttls_on_server_name(fasttls_conn *c);

static int server_name_callback(SSL *ssl, int *alert, void *arg)
{
    fasttls_conn *c = SSL_get_app_data(ssl);
    (void)arg;
    if (c == NULL || fasttls_on_server_name(c))
        return SSL_TLSEXT_ERR_OK;
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

void fasttls_ctx_enable_sni_callback(SSL_CTX *ctx, int on)
{
    SSL_CTX_set_tlsext_servername_callback(ctx, (on ? server_name_callback : NULL));
}

const char *fasttls_conn_server_name(fasttls_conn *c)
{
    if (c->ssl == NULL)
        return NULL;
    return SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
}

/* Serve this connection from another context (its certificate and key). */
int fasttls_conn_switch_ctx(fasttls_conn *c, SSL_CTX *ctx)
{
    CRYPTO_RWLOCK *lock = conf_lock(ctx);
    int ok = 0;
    if (c->ssl != NULL && read_lock(lock)) {
        ok = SSL_set_SSL_CTX(c->ssl, ctx) == ctx;
        unlock(lock);
    }
    return ok;
}

static void ctx_extra_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
    struct ctx_extra *x = ptr;
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    if (x == NULL)
        return;
    CRYPTO_THREAD_lock_free(x->conf_lock);
    CRYPTO_THREAD_lock_free(x->lock);
    free(x->alpn);
    free(x->keylog_path);
    X509_free(x->id_cert);
    EVP_PKEY_free(x->id_key);
    sk_X509_pop_free(x->id_chain, X509_free);
    free(x);
}

/* ---- library and context ---- */

int fasttls_init(void)
{
    if (conn_bio_method != NULL)
        return 1;
    /* Called once at import, under the GIL. */
    ctx_extra_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_extra_free);
    conn_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "fasttls");
    if (ctx_extra_index < 0 || conn_bio_method == NULL)
        return 0;
    BIO_meth_set_write(conn_bio_method, conn_bio_write);
    BIO_meth_set_read(conn_bio_method, conn_bio_read);
    BIO_meth_set_ctrl(conn_bio_method, conn_bio_ctrl);
    BIO_meth_set_create(conn_bio_method, conn_bio_create);
    BIO_meth_set_destroy(conn_bio_method, conn_bio_destroy);
    return 1;
}

/* Mozilla's "intermediate" TLS 1.2 suites: forward secret AEAD only. */
static const char default_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";

SSL_CTX *fasttls_ctx_new(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    struct ctx_extra *x = calloc(1, sizeof(*x));
    if (ctx == NULL || x == NULL || (x->lock = CRYPTO_THREAD_lock_new()) == NULL ||
        (x->conf_lock = CRYPTO_THREAD_lock_new()) == NULL ||
        !SSL_CTX_set_ex_data(ctx, ctx_extra_index, x)) {
        if (x != NULL) {
            CRYPTO_THREAD_lock_free(x->lock);
            CRYPTO_THREAD_lock_free(x->conf_lock);
        }
        free(x);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_ALL | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_clear_options(ctx, SSL_OP_LEGACY_SERVER_CONNECT);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Key exchange groups of Mozilla's "intermediate" profile (OpenSSL would add X448 and
     * P-521, which it says to reject). */
    if (!SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") ||
        !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, default_ciphers) ||
        !SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"fasttls", 7)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* Level 2 (112-bit security): no RSA/DH keys under 2048 bits, no SHA-1 signatures, whatever
     * the system configuration says (like the stdlib's @SECLEVEL=2). */
    SSL_CTX_set_security_level(ctx, 2);
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, x);
    SSL_CTX_set_cert_cb(ctx, identity_callback, NULL);
    return ctx;
}

int fasttls_ctx_set_alpn(SSL_CTX *ctx, const unsigned char *wire, size_t len)
{
    struct ctx_extra *x = SSL_CTX_get_ex_data(ctx, ctx_extra_index);
    unsigned char *copy = NULL;
    if (len && (copy = malloc(len)) == NULL)
        return 0;
    if (len)
        memcpy(copy, wire, len);
    if (!CRYPTO_THREAD_write_lock(x->lock)) {
        free(copy);
        return 0;
    }
    free(x->alpn);
    x->alpn = copy;
    x->alpn_len = len;
    CRYPTO_THREAD_unlock(x->lock);
    /* The client side offers the same list (SSL_CTX_set_alpn_protos returns 0 on success). */
    return SSL_CTX_set_alpn_protos(ctx, wire, (unsigned int)len) == 0;
}

int fasttls_ctx_set_keylog(SSL_CTX *ctx, const char *path)
{
    struct ctx_extra *x = SSL_CTX_get_ex_data(ctx, ctx_extra_index);
    char *copy = NULL;
    if (path != NULL && (copy = strdup(path)) == NULL)
        return 0;
    if (!CRYPTO_THREAD_write_lock(x->lock)) {
        free(copy);
        return 0;
    }
    free(x->keylog_path);
    x->keylog_path = copy;
    CRYPTO_THREAD_unlock(x->lock);
    /* Only while a file is set: with any callback installed, OpenSSL formats every secret of
     * every handshake as hex (~0.1 ms a handshake pair). */
    SSL_CTX_set_keylog_callback(ctx, copy != NULL ? keylog_line : NULL);
    return 1;
}

struct password {
    const char *data;
    size_t len;
};

/* Never prompt on a terminal (OpenSSL's default without a callback): no password is an error. */
static int password_callback(char *buf, int size, int rwflag, void *u)
{
    struct password *pw = u;
    (void)rwflag;
    if (pw->data == NULL || pw->len > (size_t)size)
        return pw->data == NULL ? 0 : -1;
    memcpy(buf, pw->data, pw->len);
    return (int)pw->len;
}

/* The leaf first, then its chain, from one PEM buffer; NULL and no chain on error. */
static X509 *read_chain(const char *pem, size_t len, STACK_OF(X509) **chain)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *leaf = b != NULL ? PEM_read_bio_X509_AUX(b, NULL, NULL, NULL) : NULL;
    X509 *x;
    *chain = leaf != NULL ? sk_X509_new_null() : NULL;
    while (*chain != NULL && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(*chain, x)) {
            X509_free(x);
            break;
        }
    }
    /* The loop ends on "no start line": the end of the buffer, not an error. */
    if (*chain != NULL && ERR_GET_REASON(ERR_peek_last_error()) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
    } else {
        sk_X509_pop_free(*chain, X509_free);
        *chain = NULL;
        X509_free(leaf);
        leaf = NULL;
    }
    BIO_free(b);
    return leaf;
}

/* A reload that changes the key type (RSA <-> ECDSA) would leave the old certificate in the
 * context (OpenSSL keeps one per key type, and no call removes one), still chosen for clients
 * that prefer its type. Such contexts serve their current identity per connection instead. */
static int identity_callback(SSL *ssl, void *arg)
{
    struct ctx_extra *x = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_extra_index);
    int ok = 1;
    (void)arg;
    if (x == NULL || !x->exclusive_identity || !CRYPTO_THREAD_read_lock(x->lock))
        return 1;
    SSL_certs_clear(ssl);
    ok = SSL_use_cert_and_key(ssl, x->id_cert, x->id_key, x->id_chain, 1);
    CRYPTO_THREAD_unlock(x->lock);
    return ok;
}

/* Certificate chain and key: 1 done, 0 the chain is unreadable, -1 the key is unreadable or
 * does not match. Replaces the previous identity for connections created afterwards. */
int fasttls_ctx_use_identity(SSL_CTX *ctx, const char *chain_pem, size_t chain_len,
                             const char *key_pem, size_t key_len, const char *password,
                             size_t password_len)
{
    struct ctx_extra *x = SSL_CTX_get_ex_data(ctx, ctx_extra_index);
    struct password pw = {password, password_len};
    STACK_OF(X509) *chain = NULL;
    X509 *leaf = read_chain(chain_pem, chain_len, &chain), *current;
    EVP_PKEY *key = NULL;
    BIO *b;
    int result = -1;
    if (leaf == NULL)
        return 0;
    if ((b = BIO_new_mem_buf(key_pem, (int)key_len)) != NULL) {
        key = PEM_read_bio_PrivateKey(b, NULL, password_callback, &pw);
        BIO_free(b);
    }
    current = SSL_CTX_get0_certificate(ctx);
    if (key != NULL && X509_check_private_key(leaf, key) &&
        SSL_CTX_use_cert_and_key(ctx, leaf, key, chain, 1) && CRYPTO_THREAD_write_lock(x->lock)) {
        if (current != NULL &&
            EVP_PKEY_base_id(X509_get0_pubkey(current)) != EVP_PKEY_base_id(key))
            x->exclusive_identity = 1;
        X509_free(x->id_cert);
        EVP_PKEY_free(x->id_key);
        sk_X509_pop_free(x->id_chain, X509_free);
        x->id_cert = leaf, x->id_key = key, x->id_chain = chain;
        leaf = NULL, key = NULL, chain = NULL;
        CRYPTO_THREAD_unlock(x->lock);
        result = 1;
    }
    X509_free(leaf);
    EVP_PKEY_free(key);
    sk_X509_pop_free(chain, X509_free);
    return result;
}

/* Trust anchors from memory, PEM or concatenated DER; returns how many were added, -1 on error. */
int fasttls_store_add_ca(X509_STORE *store, const unsigned char *data, size_t len, int pem)
{
    const unsigned char *p = data;
    BIO *b = NULL;
    X509 *x;
    int count = 0;
    if (pem && (b = BIO_new_mem_buf(data, (int)len)) == NULL)
        return -1;
    for (;;) {
        if (pem)
            x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        else
            x = p < data + len ? d2i_X509(NULL, &p, (long)(data + len - p)) : NULL;
        if (x == NULL)
            break;
        if (!X509_STORE_add_cert(store, x)) {
            X509_free(x);
            count = -1;
            break;
        }
        X509_free(x);
        count++;
    }
    BIO_free(b);
    if (count > 0 && (pem ? ERR_GET_REASON(ERR_peek_last_error()) == PEM_R_NO_START_LINE
                          : p == data + len))
        ERR_clear_error();
    else if (count >= 0)
        count = -1;
    return count;
}

/* ---- connections ---- */

/* Connections live in memory the caller owns (Python: zeroed by ffi.new, freed when its last
 * reference goes). The SSL object and the buffers are released separately and may be released
 * first: with reference cycles, CPython runs every finalizer (the one releasing these included)
 * before it frees anything, and another object's finalizer may still use the connection. A
 * released connection has ssl == NULL, and every operation then fails cleanly. */
static int fasttls_conn_init_inner(fasttls_conn *c, SSL_CTX *ctx, int server)
{
    CRYPTO_RWLOCK *lock = conf_lock(ctx);
    BIO *b;
    if (read_lock(lock)) {
        c->ssl = SSL_new(ctx);
        unlock(lock);
    }
    b = BIO_new(conn_bio_method);
    if (c->ssl == NULL || b == NULL) {
        BIO_free(b);
        SSL_free(c->ssl);
        c->ssl = NULL;
        return 0;
    }
    BIO_set_data(b, c);
    SSL_set_bio(c->ssl, b, b); /* one BIO both ways: SSL_set_bio takes the single reference */
    SSL_set_app_data(c->ssl, c);
    SSL_set_verify(c->ssl, SSL_VERIFY_NONE, verify_callback);
    if (server)
        SSL_set_accept_state(c->ssl);
    else
        SSL_set_connect_state(c->ssl);
    return 1;
}

void fasttls_conn_release(fasttls_conn *c)
{
    SSL_free(c->ssl);
    c->ssl = NULL;
    free(c->out);
    free(c->plain);
    free(c->held);
    c->out = c->plain = NULL;
    c->held = NULL;
    c->out_len = c->out_cap = c->plain_len = c->plain_cap = c->held_len = c->held_cap = 0;
}

static int released(fasttls_conn *c)
{
    c->ssl_error = SSL_ERROR_SSL;
    c->err_code = 0;
    return FASTTLS_ERROR;
}

void fasttls_conn_set_verify(fasttls_conn *c, int mode)
{
    if (c->ssl != NULL)
        SSL_set_verify(c->ssl, mode, verify_callback);
}

int fasttls_conn_set_peer_name(fasttls_conn *c, const char *name, int is_ip, int check, int sni)
{
    X509_VERIFY_PARAM *param;
    if (c->ssl == NULL)
        return 0;
    param = SSL_get0_param(c->ssl);
    if (sni && !is_ip && !SSL_set_tlsext_host_name(c->ssl, name))
        return 0;
    if (!check)
        return 1;
    if (is_ip)
        return X509_VERIFY_PARAM_set1_ip_asc(param, name);
    /* Like the stdlib: no partial wildcards, and the subject CN is never consulted unless asked
     * (check_common_name), even for a certificate without DNS names. */
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
                                               (check == 2 ? 0 : X509_CHECK_FLAG_NEVER_CHECK_SUBJECT));
    return X509_VERIFY_PARAM_set1_host(param, name, 0);
}

static int fasttls_handshake_inner(fasttls_conn *c, const unsigned char *data, size_t len)
{
    CRYPTO_RWLOCK *lock;
    int r, status = FASTTLS_OK;
    if (c->ssl == NULL)
        return released(c);
    ERR_clear_error();
    if (!feed(c, data, len))
        return fail_nomem(c);
    /* The context at the start: server-side SNI may switch the SSL to another one. */
    lock = conf_lock(SSL_get_SSL_CTX(c->ssl));
    if (!read_lock(lock))
        return fail_nomem(c);
    r = SSL_do_handshake(c->ssl);
    unlock(lock);
    if (r != 1) {
        int e = SSL_get_error(c->ssl, r);
        status = e == SSL_ERROR_WANT_READ ? FASTTLS_WANT_READ : fail(c, e);
    }
    if (!keep_rest(c))
        return fail_nomem(c);
    return status;
}

/* Returns the plaintext length (in c->plain), or a negative status; on FASTTLS_CLOSED and
 * FASTTLS_ERROR, plain_len still counts the plaintext decrypted before. */
static ptrdiff_t fasttls_read_inner(fasttls_conn *c, const unsigned char *data, size_t len)
{
    int status;
    size_t n;
    c->plain_len = 0;
    if (c->ssl == NULL)
        return released(c);
    shrink(&c->plain, &c->plain_cap, 0);
    if (!feed(c, data, len))
        return fail_nomem(c);
    /* Plaintext never outgrows the ciphertext, plus at most one record already buffered: sized
     * so, small messages keep a small buffer (idle connections stay lean). */
    if (!reserve(&c->plain, &c->plain_cap,
                 c->in_len + (SSL_has_pending(c->ssl) ? RECORD_PLAIN_MAX : 1)))
        return fail_nomem(c);
    for (;;) {
        if (c->plain_len == c->plain_cap &&
            !reserve(&c->plain, &c->plain_cap, c->plain_cap + RECORD_PLAIN_MAX)) {
            status = fail_nomem(c);
            break;
        }
        if (SSL_read_ex(c->ssl, c->plain + c->plain_len, c->plain_cap - c->plain_len, &n)) {
            c->plain_len += n;
            /* All input consumed and nothing buffered: another SSL_read_ex would only fail
             * with want-read, at the cost of the error path. */
            if (c->in_len == 0 && !SSL_has_pending(c->ssl)) {
                status = FASTTLS_OK;
                break;
            }
            continue;
        }
        switch (SSL_get_error(c->ssl, 0)) {
        case SSL_ERROR_WANT_READ:
            status = FASTTLS_OK;
            break;
        case SSL_ERROR_ZERO_RETURN:
            status = FASTTLS_CLOSED;
            ERR_clear_error();
            break;
        default:
            status = fail(c, SSL_get_error(c->ssl, 0));
        }
        break;
    }
    /* A peer's KeyUpdate that asks for ours: OpenSSL holds the reply until our next write.
     * Produce it now (into c->out: pending_output), so a reader that never writes does not
     * leave the peer waiting. SSL_key_update + SSL_do_handshake is the documented way to send
     * a scheduled KeyUpdate at once. */
    if (status == FASTTLS_OK && SSL_get_key_update_type(c->ssl) != SSL_KEY_UPDATE_NONE &&
        (!SSL_key_update(c->ssl, SSL_KEY_UPDATE_NOT_REQUESTED) || SSL_do_handshake(c->ssl) != 1))
        status = fail(c, SSL_get_error(c->ssl, 0));
    if (!keep_rest(c))
        return fail_nomem(c);
    return status == FASTTLS_OK ? (ptrdiff_t)c->plain_len : status;
}

/* Returns how many bytes of c->out to send, all of them; they count as taken (out_len is 0
 * again), so the caller copies them before its next call on this connection. */
static ptrdiff_t fasttls_write_inner(fasttls_conn *c, const unsigned char *data, size_t len)
{
    size_t written, n;
    if (c->ssl == NULL)
        return released(c);
    if (c->out_len == 0)
        shrink(&c->out, &c->out_cap, 0);
    /* Room for the records' headers and tags up front: the BIO then never reallocates. */
    if (len && !reserve(&c->out, &c->out_cap, c->out_len + len + (len / RECORD_PLAIN_MAX + 1) * 64))
        return fail_nomem(c);
    if (len && !SSL_write_ex(c->ssl, data, len, &written))
        return fail(c, SSL_get_error(c->ssl, 0));
    n = c->out_len;
    c->out_len = 0;
    return (ptrdiff_t)n;
}

static int fasttls_shutdown_inner(fasttls_conn *c)
{
    int r;
    if (c->ssl == NULL)
        return released(c);
    ERR_clear_error();
    r = SSL_shutdown(c->ssl);
    if (r < 0) {
        int e = SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_WANT_READ)
            return fail(c, e);
    }
    return FASTTLS_OK;
}

void fasttls_conn_release_buffers(fasttls_conn *c)
{
    if (c->ssl == NULL)
        return;
    SSL_free_buffers(c->ssl); /* refuses, harmlessly, while a partial record is buffered */
    if (c->out_len == 0) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    free(c->plain);
    c->plain = NULL;
    c->plain_cap = c->plain_len = 0;
    if (c->held_len == 0) {
        free(c->held);
        c->held = NULL;
        c->held_cap = 0;
    }
}

/* ---- an ephemeral self-signed certificate, for `python -m fasttls bench` ---- */

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    int ok;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return 0;
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

static int bio_to_string(BIO *b, char **out, size_t *len)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    if (n <= 0 || (*out = OPENSSL_malloc((size_t)n)) == NULL)
        return 0;
    memcpy(*out, data, (size_t)n);
    *len = (size_t)n;
    return 1;
}

int fasttls_make_self_signed(const char *hostname, char **cert_pem, size_t *cert_len,
                             char **key_pem, size_t *key_len)
{
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, NULL);
    EVP_PKEY *key = NULL;
    X509 *x = X509_new();
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    X509_NAME *name;
    char san[300];
    unsigned char serial[8];
    BIGNUM *bn = NULL;
    int ok = 0;

    *cert_pem = *key_pem = NULL;
    if (kctx == NULL || x == NULL || cb == NULL || kb == NULL || strlen(hostname) > 250)
        goto done;
    if (EVP_PKEY_keygen_init(kctx) <= 0 ||
        EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kctx, NID_X9_62_prime256v1) <= 0 ||
        EVP_PKEY_keygen(kctx, &key) <= 0)
        goto done;
    if (RAND_bytes(serial, sizeof(serial)) != 1)
        goto done;
    serial[0] &= 0x7f; /* a positive serial number */
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    name = X509_get_subject_name(x);
    snprintf(san, sizeof(san), "DNS:%s,IP:127.0.0.1,IP:::1", hostname);
    if (bn == NULL || !X509_set_version(x, 2) || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), 7L * 86400) || !X509_set_pubkey(x, key) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)hostname,
                                    -1, -1, 0) ||
        !X509_set_issuer_name(x, name) || !add_ext(x, NID_basic_constraints, "critical,CA:TRUE") ||
        !add_ext(x, NID_key_usage, "critical,digitalSignature,keyCertSign") ||
        !add_ext(x, NID_subject_key_identifier, "hash") ||
        !add_ext(x, NID_subject_alt_name, san) || !X509_sign(x, key, EVP_sha256()))
        goto done;
    if (!PEM_write_bio_X509(cb, x) || !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL))
        goto done;
    ok = bio_to_string(cb, cert_pem, cert_len) && bio_to_string(kb, key_pem, key_len);
done:
    if (!ok) {
        OPENSSL_free(*cert_pem);
        *cert_pem = NULL;
    }
    BN_free(bn);
    BIO_free(cb);
    BIO_free(kb);
    X509_free(x);
    EVP_PKEY_free(key);
    EVP_PKEY_CTX_free(kctx);
    return ok;
}

void fasttls_free(void *p)
{
    OPENSSL_free(p);
}

/* ---- certificate decoding for getpeercert() ---- */

X509 *fasttls_peer_certificate(const SSL *ssl)
{
/* OpenSSL 3.0 renamed SSL_get_peer_certificate (which returns a new reference) to make that
 * explicit, and deprecated the old name. */
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    return SSL_get1_peer_certificate(ssl);
#else
    return SSL_get_peer_certificate(ssl);
#endif
}

int fasttls_x509_der(X509 *x, unsigned char **der)
{
    *der = NULL;
    return i2d_X509(x, der);
}

/* Entry i of a name: its RDN set index, its field name ("commonName") and its UTF-8 value
 * (to be freed with fasttls_free). Returns the value's length, or -1. */
int fasttls_name_entry(X509_NAME *name, int i, int *set, char *field, size_t field_len,
                       unsigned char **value)
{
    X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
    *value = NULL;
    if (e == NULL)
        return -1;
    *set = X509_NAME_ENTRY_set(e);
    if (OBJ_obj2txt(field, (int)field_len, X509_NAME_ENTRY_get_object(e), 0) <= 0)
        return -1;
    return ASN1_STRING_to_UTF8(value, X509_NAME_ENTRY_get_data(e));
}

/* notBefore/notAfter as the stdlib shows them: "Jun  1 12:00:00 2030 GMT". */
int fasttls_x509_time(X509 *x, int not_after, char *buf, size_t len)
{
    BIO *b = BIO_new(BIO_s_mem());
    int n = -1;
    if (b != NULL && ASN1_TIME_print(b, not_after ? X509_get0_notAfter(x) : X509_get0_notBefore(x)))
        n = BIO_read(b, buf, (int)len - 1);
    BIO_free(b);
    if (n >= 0)
        buf[n] = '\0';
    return n;
}

int fasttls_x509_serial(X509 *x, char *buf, size_t len)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    int ok = hex != NULL && strlen(hex) < len;
    if (ok)
        strcpy(buf, hex);
    OPENSSL_free(hex);
    BN_free(bn);
    return ok;
}

/* subjectAltName entry i: its GEN_* type and raw value (to be freed with fasttls_free).
 * Returns the value's length, or -1 past the end. */
int fasttls_x509_san(X509 *x, int i, int *type, unsigned char **value)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    GENERAL_NAME *g;
    const ASN1_STRING *s = NULL;
    int n = -1;
    *value = NULL;
    if (names == NULL || i >= sk_GENERAL_NAME_num(names))
        goto done;
    g = sk_GENERAL_NAME_value(names, i);
    *type = g->type;
    if (g->type == GEN_DNS || g->type == GEN_EMAIL || g->type == GEN_URI)
        s = g->d.ia5;
    else if (g->type == GEN_IPADD)
        s = g->d.ip;
    n = 0;
    if (s != NULL && (n = ASN1_STRING_length(s)) > 0 && (*value = OPENSSL_malloc((size_t)n)) != NULL)
        memcpy(*value, ASN1_STRING_get0_data(s), (size_t)n);
    else
        n = 0;
done:
    GENERAL_NAMES_free(names);
    ERR_clear_error();
    return n;
}

/* ---- trust stores shared between contexts (the Python side caches them) ---- */

/* A new store with OpenSSL's default locations (SSL_CERT_FILE/SSL_CERT_DIR honoured). Loading
 * the system bundle is the ~18 ms that a cache of these saves per context. */
X509_STORE *fasttls_store_new(const char *cafile, const char *capath, int defaults)
{
    X509_STORE *store = X509_STORE_new();
    if (store == NULL)
        return NULL;
    if ((defaults && !X509_STORE_set_default_paths(store)) ||
        ((cafile != NULL || capath != NULL) && !X509_STORE_load_locations(store, cafile, capath))) {
        X509_STORE_free(store);
        return NULL;
    }
    return store;
}

/* A copy holding the same certificates and CRLs, for a context about to change a store it
 * shares. Lookup directories are not copied: only the default one (default_dir) can be in a
 * shared store, and it is added back here without reloading the default bundle. */
X509_STORE *fasttls_store_copy(X509_STORE *from, int default_dir)
{
    X509_STORE *to = X509_STORE_new();
    STACK_OF(X509_OBJECT) *objs;
    X509_LOOKUP *dir;
    int i, ok = to != NULL && X509_STORE_lock(from);
    if (!ok) {
        X509_STORE_free(to);
        return NULL;
    }
    objs = X509_STORE_get0_objects(from);
    for (i = 0; ok && i < sk_X509_OBJECT_num(objs); i++) {
        X509_OBJECT *o = sk_X509_OBJECT_value(objs, i);
        if (X509_OBJECT_get0_X509(o) != NULL)
            ok = X509_STORE_add_cert(to, X509_OBJECT_get0_X509(o));
        else if (X509_OBJECT_get0_X509_CRL(o) != NULL)
            ok = X509_STORE_add_crl(to, X509_OBJECT_get0_X509_CRL(o));
    }
    X509_STORE_unlock(from);
    if (ok && default_dir)
        ok = (dir = X509_STORE_add_lookup(to, X509_LOOKUP_hash_dir())) != NULL &&
             X509_LOOKUP_add_dir(dir, NULL, X509_FILETYPE_DEFAULT);
    if (!ok) {
        X509_STORE_free(to);
        return NULL;
    }
    return to;
}

/* The i-th certificate of the context's store (a new reference), or NULL past the end;
 * *kind: 0 certificate, 1 CA certificate. CRLs are counted by fasttls_store_crl_count. */
X509 *fasttls_store_cert(SSL_CTX *ctx, int i, int *is_ca)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    STACK_OF(X509_OBJECT) *objs;
    X509 *found = NULL;
    int n, seen = 0;
    if (!X509_STORE_lock(store))
        return NULL;
    objs = X509_STORE_get0_objects(store);
    for (n = 0; n < sk_X509_OBJECT_num(objs); n++) {
        X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, n));
        if (x != NULL && seen++ == i) {
            found = x;
            X509_up_ref(found);
            *is_ca = X509_check_ca(found) != 0;
            break;
        }
    }
    X509_STORE_unlock(store);
    return found;
}

int fasttls_store_crl_count(SSL_CTX *ctx)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    STACK_OF(X509_OBJECT) *objs;
    int n, count = 0;
    if (!X509_STORE_lock(store))
        return 0;
    objs = X509_STORE_get0_objects(store);
    for (n = 0; n < sk_X509_OBJECT_num(objs); n++)
        count += X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, n)) != NULL;
    X509_STORE_unlock(store);
    return count;
}

int fasttls_ctx_cipher_count(SSL_CTX *ctx)
{
    return sk_SSL_CIPHER_num(SSL_CTX_get_ciphers(ctx));
}

const SSL_CIPHER *fasttls_ctx_cipher(SSL_CTX *ctx, int i)
{
    return sk_SSL_CIPHER_value(SSL_CTX_get_ciphers(ctx), i);
}

/* RFC 5929 tls-unique: the first Finished message of the handshake. */
size_t fasttls_conn_tls_unique(fasttls_conn *c, int server, unsigned char *buf, size_t len)
{
    if (c->ssl == NULL)
        return 0;
    if (SSL_session_reused(c->ssl) ^ !server)
        return SSL_get_finished(c->ssl, buf, len);
    return SSL_get_peer_finished(c->ssl, buf, len);
}

/* ---- entry points that run OpenSSL: counted in flight (see fasttls_quiesce) ---- */

/* enter() returns 0 only if it could not park the thread, which does not happen. */
#define IN_FLIGHT(type, call)                                                                  \
    do {                                                                                       \
        type result_;                                                                          \
        if (!enter())                                                                          \
            return (type)FASTTLS_ERROR;                                                        \
        result_ = (call);                                                                      \
        leave();                                                                               \
        return result_;                                                                        \
    } while (0)

int fasttls_handshake(fasttls_conn *c, const unsigned char *data, size_t len)
{
    IN_FLIGHT(int, fasttls_handshake_inner(c, data, len));
}

ptrdiff_t fasttls_read(fasttls_conn *c, const unsigned char *data, size_t len)
{
    IN_FLIGHT(ptrdiff_t, fasttls_read_inner(c, data, len));
}

ptrdiff_t fasttls_write(fasttls_conn *c, const unsigned char *data, size_t len)
{
    IN_FLIGHT(ptrdiff_t, fasttls_write_inner(c, data, len));
}

int fasttls_shutdown(fasttls_conn *c)
{
    IN_FLIGHT(int, fasttls_shutdown_inner(c));
}

int fasttls_conn_init(fasttls_conn *c, SSL_CTX *ctx, int server)
{
    IN_FLIGHT(int, fasttls_conn_init_inner(c, ctx, server));
}
