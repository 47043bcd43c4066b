/* Library initialisation and contexts: configuration, the configuration lock, and the callbacks
 * that read a context's settings during handshakes. */
#include "fasttls_internal.h"

#include <openssl/pem.h>
#if OPENSSL_VERSION_NUMBER < 0x30000000L
#include <openssl/dh.h>
#endif

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* A certificate, its chain and its key. OpenSSL keeps one per key type (RSA, RSA-PSS, EC,
 * Ed25519, Ed448, DSA, GOST...), and chooses among them per client by the signature algorithms
 * it offers. */
struct identity {
    X509 *cert;
    EVP_PKEY *key;
    STACK_OF(X509) *chain;
};

#define IDENTITIES_MAX 8

static void identity_free(struct identity *id)
{
    X509_free(id->cert);
    EVP_PKEY_free(id->key);
    sk_X509_pop_free(id->chain, X509_free);
    id->cert = NULL, id->key = NULL, id->chain = NULL;
}

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
    /* The identities served (one per key type), and whether to install them per connection
     * (see identity_callback). */
    struct identity ids[IDENTITIES_MAX];
    int n_ids;
    int per_connection;
    /* An identity's private key is elsewhere (fasttls_keyless.c): derived from ids[] whenever
     * they change, so a keyless identity replaced by a local one stops the signing jobs. */
    int keyless;
    /* Session-ticket keys (fasttls_tickets.c), NULL until set; freed with the context. */
    struct fasttls_tickets *tickets;
};

static int ctx_extra_index = -1;

static struct ctx_extra *extra(const SSL_CTX *ctx)
{
    return SSL_CTX_get_ex_data(ctx, ctx_extra_index);
}

struct fasttls_tickets **fasttls_ctx_tickets(const SSL_CTX *ctx)
{
    struct ctx_extra *x = extra(ctx);
    return x != NULL ? &x->tickets : NULL;
}

CRYPTO_RWLOCK *fasttls_conf_lock(const SSL_CTX *ctx)
{
    struct ctx_extra *x = extra(ctx);
    return x != NULL ? x->conf_lock : NULL;
}

/* For the Python side, around every change to the context. Not re-entrant. */
int fasttls_ctx_lock(SSL_CTX *ctx)
{
    CRYPTO_RWLOCK *lock = fasttls_conf_lock(ctx);
    return lock != NULL && CRYPTO_THREAD_write_lock(lock);
}

void fasttls_ctx_unlock(SSL_CTX *ctx)
{
    CRYPTO_RWLOCK *lock = fasttls_conf_lock(ctx);
    if (lock != NULL)
        CRYPTO_THREAD_unlock(lock);
}

/* ---- callbacks ---- */

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
    struct ctx_extra *x = extra(SSL_get_SSL_CTX(ssl));
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

/* Server-side SNI: the Python layer's sni_callback never runs inside the handshake (a keyless
 * handshake runs on a fibre stack where no Python code may run): the client-hello callback
 * stops the handshake for it (FASTTLS_HELLO_SNI, fasttls_hello.c), the Python side runs it and
 * switches the connection's context between two handshake calls. This servername callback only
 * acknowledges the name to the client, as OpenSSL does when a callback accepts it. */
static int server_name_ack(SSL *ssl, int *alert, void *arg)
{
    (void)ssl, (void)alert, (void)arg;
    return SSL_TLSEXT_ERR_OK;
}

void fasttls_ctx_enable_sni_callback(SSL_CTX *ctx, int on)
{
    SSL_CTX_set_tlsext_servername_callback(ctx, (on ? server_name_ack : NULL));
    fasttls_hello_enable_sni(ctx, on);
}

int fasttls_ctx_is_keyless(SSL_CTX *ctx)
{
    struct ctx_extra *x = extra(ctx);
    return x != NULL && x->keyless;
}

/* The stdlib's private debugging hook (`SSLContext._msg_callback`): every TLS message and record
 * header of connections created while it is on, handed to the Python layer (an `extern
 * "Python+C"` function, GIL held) inside the engine call that reads or writes it. Off by
 * default: no cost then. */
void fasttls_on_message(fasttls_conn *c, int write_p, int version, int content_type,
                        const void *buf, size_t len);

static void message_callback(int write_p, int version, int content_type, const void *buf,
                             size_t len, SSL *ssl, void *arg)
{
    fasttls_conn *c = SSL_get_app_data(ssl);
    (void)arg;
    if (c != NULL)
        fasttls_on_message(c, write_p, version, content_type, buf, len);
}

void fasttls_ctx_enable_msg_callback(SSL_CTX *ctx, int on)
{
    SSL_CTX_set_msg_callback(ctx, on ? message_callback : NULL);
}

/* TLS-PSK (the stdlib's set_psk_client_callback / set_psk_server_callback): the Python layer
 * (`extern "Python+C"` functions, GIL held) finds the callback of the connection's context and
 * fills OpenSSL's buffers. A result of 0 refuses the handshake. */
unsigned int fasttls_on_psk_client(SSL_CTX *ctx, const char *hint, char *identity,
                                   unsigned int max_identity_len, unsigned char *psk,
                                   unsigned int max_psk_len);
unsigned int fasttls_on_psk_server(SSL_CTX *ctx, const char *identity, unsigned char *psk,
                                   unsigned int max_psk_len);

static unsigned int psk_client_callback(SSL *ssl, const char *hint, char *identity,
                                        unsigned int max_identity_len, unsigned char *psk,
                                        unsigned int max_psk_len)
{
    return fasttls_on_psk_client(SSL_get_SSL_CTX(ssl), hint, identity, max_identity_len, psk,
                                 max_psk_len);
}

static unsigned int psk_server_callback(SSL *ssl, const char *identity, unsigned char *psk,
                                        unsigned int max_psk_len)
{
    return fasttls_on_psk_server(SSL_get_SSL_CTX(ssl), identity, psk, max_psk_len);
}

void fasttls_ctx_enable_psk_client(SSL_CTX *ctx, int on)
{
    SSL_CTX_set_psk_client_callback(ctx, on ? psk_client_callback : NULL);
}

/* The identity hint (NULL for none) goes to TLS 1.2 clients. 1 done, 0 refused (too long). */
int fasttls_ctx_enable_psk_server(SSL_CTX *ctx, int on, const char *hint)
{
    ERR_clear_error();
    SSL_CTX_set_psk_server_callback(ctx, on ? psk_server_callback : NULL);
    return SSL_CTX_use_psk_identity_hint(ctx, on ? hint : NULL);
}

/* A chain file with the leaf alone means "no chain given": OpenSSL then completes the chain
 * from the trust store, as it does for the stdlib. An empty stack would be taken as an explicit
 * empty chain and switch that off. */
static STACK_OF(X509) *explicit_chain(STACK_OF(X509) *chain)
{
    return chain != NULL && sk_X509_num(chain) > 0 ? chain : NULL;
}

/* A replacement that drops a key type (an RSA identity replaced by an ECDSA one) would leave
 * the old certificate in the context (OpenSSL keeps one per key type, and no call removes
 * one), still chosen for clients that prefer its type. Such contexts install their current
 * identities in each connection instead, before OpenSSL chooses one. */
static int identity_callback(SSL *ssl, void *arg)
{
    struct ctx_extra *x = extra(SSL_get_SSL_CTX(ssl));
    int i, ok = 1;
    (void)arg;
    if (x == NULL || !x->per_connection || !CRYPTO_THREAD_read_lock(x->lock))
        return 1;
    SSL_certs_clear(ssl);
    for (i = 0; ok && i < x->n_ids; i++)
        ok = SSL_use_cert_and_key(ssl, x->ids[i].cert, x->ids[i].key,
                                  explicit_chain(x->ids[i].chain), 1);
    CRYPTO_THREAD_unlock(x->lock);
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
    while (x->n_ids > 0)
        identity_free(&x->ids[--x->n_ids]);
    fasttls_tickets_free(x->tickets);
    free(x);
}

/* ---- library and context ---- */

int fasttls_init(void)
{
    /* Called once at import, under the GIL. */
    if (ctx_extra_index < 0)
        ctx_extra_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_extra_free);
    return ctx_extra_index >= 0 && fasttls_bio_method_init() && fasttls_ocsp_init() &&
           fasttls_hello_init();
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
    /* Prefer trust anchors to untrusted intermediates when building chains (cross-signed
     * roots), and report it, as the stdlib does (bpo-23476). */
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_TRUSTED_FIRST);
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, x);
    SSL_CTX_set_cert_cb(ctx, identity_callback, NULL);
    return ctx;
}

/* The list in wire format (length-prefixed names). At most 65535 bytes: the extension's own
 * length field has 16 bits (RFC 7301), and OpenSSL would fail every handshake instead. */
int fasttls_ctx_set_alpn(SSL_CTX *ctx, const unsigned char *wire, size_t len)
{
    struct ctx_extra *x = extra(ctx);
    unsigned char *copy = NULL;
    ERR_clear_error();
    if (len > 65535) {
        ERR_raise(ERR_LIB_SSL, ERR_R_PASSED_INVALID_ARGUMENT);
        return 0;
    }
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
    struct ctx_extra *x = extra(ctx);
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

/* Certificate chain and key, for connections created afterwards. FASTTLS_IDENTITY_REPLACE:
 * they become the only identity; FASTTLS_IDENTITY_ADD: they join the others, replacing only
 * the one of the same key type (what repeated SSL_CTX_use_* calls do, and the stdlib's
 * load_cert_chain). Returns 1 done, 0 the chain is unreadable, -1 the key is unreadable or does
 * not match; the error stays on the queue for the caller. */
int fasttls_ctx_use_identity(SSL_CTX *ctx, const char *chain_pem, size_t chain_len,
                             const char *key_pem, size_t key_len, const char *password,
                             size_t password_len, int how)
{
    STACK_OF(X509) *chain = NULL;
    X509 *cert;
    EVP_PKEY *key;
    ERR_clear_error();
    cert = fasttls_read_chain(chain_pem, chain_len, &chain);
    if (cert == NULL)
        return 0;
    key = fasttls_read_key(key_pem, key_len, password, password_len);
    if (key == NULL || !X509_check_private_key(cert, key)) {
        X509_free(cert);
        sk_X509_pop_free(chain, X509_free);
        EVP_PKEY_free(key);
        return -1;
    }
    return fasttls_ctx_install_identity(ctx, cert, chain, key, how);
}

/* The key type is the certificate's (a keyless key is the provider's, but its type names are
 * those of the certificate's key). */
int fasttls_ctx_install_identity(SSL_CTX *ctx, X509 *cert, STACK_OF(X509) *chain, EVP_PKEY *key,
                                 int how)
{
    struct ctx_extra *x = extra(ctx);
    struct identity id;
    int i, type, result = -1;
    id.cert = cert, id.key = key, id.chain = chain;
    if (SSL_CTX_use_cert_and_key(ctx, id.cert, id.key, explicit_chain(id.chain), 1) &&
        CRYPTO_THREAD_write_lock(x->lock)) {
        type = EVP_PKEY_base_id(X509_get0_pubkey(id.cert));
        for (i = 0; i < x->n_ids; i++) {
            if (EVP_PKEY_base_id(X509_get0_pubkey(x->ids[i].cert)) == type)
                identity_free(&x->ids[i]);
            else if (how != FASTTLS_IDENTITY_ADD) {
                identity_free(&x->ids[i]);
                x->per_connection = 1; /* the context still holds this type's certificate */
            }
        }
        /* Compact what is left, then append the new one. */
        for (i = 0, type = 0; i < x->n_ids; i++)
            if (x->ids[i].cert != NULL)
                x->ids[type++] = x->ids[i];
        x->n_ids = type;
        /* One per key type, and there are fewer key types than slots. */
        if (x->n_ids < IDENTITIES_MAX) {
            x->ids[x->n_ids++] = id;
            id.cert = NULL, id.key = NULL, id.chain = NULL;
            result = 1;
        }
        for (i = 0, x->keyless = 0; i < x->n_ids; i++)
            x->keyless |= fasttls_key_is_keyless(x->ids[i].key);
        CRYPTO_THREAD_unlock(x->lock);
    }
    identity_free(&id);
    return result;
}

/* Finite-field DH parameters for TLS 1.2 DHE, from PEM ("DH PARAMETERS"), instead of the
 * automatic RFC 7919 groups. 1 done, 0 unreadable or not DH, -1 refused (e.g. smaller than the
 * security level allows); the error stays on the queue for the caller. */
int fasttls_ctx_load_dh_params(SSL_CTX *ctx, const char *pem, size_t len)
{
    BIO *b;
    int result = 0;
    ERR_clear_error();
    if (len > INT_MAX) {
        ERR_raise(ERR_LIB_SSL, ERR_R_PASSED_INVALID_ARGUMENT);
        return 0;
    }
    if ((b = BIO_new_mem_buf(pem, (int)len)) == NULL)
        return 0;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    /* The PEM block first, as PEM_read_DHparams (deprecated in 3.0, and what the stdlib uses)
     * finds it: blocks of other types are skipped, and none at all is PEM's "no start line",
     * the error the stdlib reports for a file without parameters. */
    {
        unsigned char *der = NULL;
        const unsigned char *p;
        char *name = NULL;
        long der_len = 0;
        EVP_PKEY *dh = NULL;
        if (PEM_bytes_read_bio(&der, &der_len, &name, PEM_STRING_DHPARAMS, b, NULL, NULL)) {
            p = der;
            dh = d2i_KeyParams(EVP_PKEY_DH, NULL, &p, der_len);
        }
        if (dh != NULL) {
            result = SSL_CTX_set0_tmp_dh_pkey(ctx, dh) ? 1 : -1;
            if (result == 1)
                dh = NULL; /* the context owns it now */
        }
        EVP_PKEY_free(dh);
        OPENSSL_free(der);
        OPENSSL_free(name);
    }
#else
    {
        DH *dh = PEM_read_bio_DHparams(b, NULL, NULL, NULL);
        if (dh != NULL)
            result = SSL_CTX_set_tmp_dh(ctx, dh) ? 1 : -1;
        DH_free(dh);
    }
#endif
    BIO_free(b);
    /* Automatic groups would take precedence over the parameters just loaded. */
    if (result == 1)
        SSL_CTX_set_dh_auto(ctx, 0);
    return result;
}

/* The oldest protocol version this OpenSSL can speak at all, for a maximum_version of
 * MINIMUM_SUPPORTED (the stdlib's PY_PROTO_MINIMUM_AVAILABLE). Whether the security level then
 * lets it be negotiated is another matter (at fasttls's level 2, under OpenSSL 3, it does not). */
int fasttls_lowest_version(void)
{
#if !defined(OPENSSL_NO_SSL3)
    return SSL3_VERSION;
#elif !defined(OPENSSL_NO_TLS1)
    return TLS1_VERSION;
#elif !defined(OPENSSL_NO_TLS1_1)
    return TLS1_1_VERSION;
#else
    return TLS1_2_VERSION;
#endif
}

int fasttls_ctx_cipher_count(SSL_CTX *ctx)
{
    return sk_SSL_CIPHER_num(SSL_CTX_get_ciphers(ctx));
}

const SSL_CIPHER *fasttls_ctx_cipher(SSL_CTX *ctx, int i)
{
    return sk_SSL_CIPHER_value(SSL_CTX_get_ciphers(ctx), i);
}

/* The i-th identity served (fasttls_ctx_use_identity's): its certificate, and in *chain the
 * certificates sent after it (maybe NULL); NULL past the last, and -1 in *count if the context
 * keeps no identities of its own (its certificates are then OpenSSL's alone). Borrowed: valid
 * while the caller holds the configuration lock, which every change of identities takes. The
 * OCSP stapler's list, which OpenSSL's own cannot be: after a replacement that dropped a key
 * type, the SSL_CTX still holds the old certificate (see identity_callback). */
X509 *fasttls_ctx_identity(SSL_CTX *ctx, int i, STACK_OF(X509) **chain, int *count)
{
    struct ctx_extra *x = extra(ctx);
    X509 *cert = NULL;
    *chain = NULL;
    *count = -1;
    if (x == NULL || !CRYPTO_THREAD_read_lock(x->lock))
        return NULL;
    *count = x->n_ids > 0 ? x->n_ids : -1;
    if (i >= 0 && i < x->n_ids) {
        cert = x->ids[i].cert;
        *chain = x->ids[i].chain;
    }
    CRYPTO_THREAD_unlock(x->lock);
    return cert;
}
