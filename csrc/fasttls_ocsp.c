/* OCSP stapling: a server staples the response its context holds for the certificate it
 * serves; a client asks for one and, in require mode, checks it during the handshake; the
 * client and fasttls.OCSPStapler share one check of a response (fasttls_ocsp_check).
 *
 * No Python runs per handshake: the status callback (SSL_CTX_set_tlsext_status_cb) is C, for
 * both roles (OpenSSL calls the same callback on a server, to get the response to send, and on
 * a client, once the server's certificate and status have arrived).
 *
 * The staples a server context holds are replaced while handshakes read them (a refresher
 * thread): they live in the context's own `struct ocsp_conf` under a lock of its own, and each
 * handshake copies its staple out under that lock (OpenSSL frees the copy with the SSL), so a
 * replacement never frees bytes a handshake still sends. */
#include "fasttls_internal.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/ocsp.h>

/* OpenSSL 3.0's verification codes for OCSP; 1.1.1 has none, and reports them as numbers. */
#ifndef X509_V_ERR_OCSP_VERIFY_NEEDED
#define X509_V_ERR_OCSP_VERIFY_NEEDED 73
#define X509_V_ERR_OCSP_VERIFY_FAILED 74
#define X509_V_ERR_OCSP_CERT_UNKNOWN 75
#endif

/* One staple: for the identity whose certificate is `leaf`, or (leaf NULL) for any. A context
 * serving an RSA and an ECDSA certificate staples each its own response. */
struct staple {
    X509 *leaf;
    unsigned char *der;
    size_t len;
};

#define STAPLES_MAX 9 /* one per identity (fasttls_ctx.c keeps at most 8) and one for any */

struct ocsp_conf {
    CRYPTO_RWLOCK *lock; /* guards staples and n_staples */
    struct staple staples[STAPLES_MAX];
    int n_staples;
    int require;         /* client: fail the handshake without a good staple */
};

static int conf_index = -1; /* SSL_CTX ex_data: struct ocsp_conf */
static int failure_index = -1; /* SSL ex_data: the FASTTLS_OCSP_* that failed the handshake */

static void conf_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                      void *argp)
{
    struct ocsp_conf *conf = ptr;
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    if (conf == NULL)
        return;
    CRYPTO_THREAD_lock_free(conf->lock);
    while (conf->n_staples > 0) {
        struct staple *st = &conf->staples[--conf->n_staples];
        X509_free(st->leaf);
        OPENSSL_free(st->der);
    }
    free(conf);
}

int fasttls_ocsp_init(void)
{
    if (conf_index < 0)
        conf_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, conf_free);
    if (failure_index < 0)
        failure_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    return conf_index >= 0 && failure_index >= 0;
}

/* The context's OCSP settings, made on first use (the Python side holds the context's
 * configuration lock for writing then, so no handshake step and no other setter runs). */
static struct ocsp_conf *conf_of(SSL_CTX *ctx, int create)
{
    struct ocsp_conf *conf = SSL_CTX_get_ex_data(ctx, conf_index);
    if (conf != NULL || !create)
        return conf;
    conf = calloc(1, sizeof(*conf));
    if (conf == NULL || (conf->lock = CRYPTO_THREAD_lock_new()) == NULL ||
        !SSL_CTX_set_ex_data(ctx, conf_index, conf)) {
        if (conf != NULL)
            CRYPTO_THREAD_lock_free(conf->lock);
        free(conf);
        return NULL;
    }
    return conf;
}

/* ---- checking a response ---- */

static int64_t epoch_of(const ASN1_GENERALIZEDTIME *t)
{
    struct tm tm;
    if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    return (int64_t)timegm(&tm);
}

/* The single response of `bs` about `leaf`, matched under whatever hash its CertID uses (the
 * responder answers with the request's; clients and responders disagree on SHA-1 vs SHA-256). */
static OCSP_SINGLERESP *single_for(OCSP_BASICRESP *bs, X509 *leaf, X509 *issuer)
{
    int i, n = OCSP_resp_count(bs);
    for (i = 0; i < n; i++) {
        OCSP_SINGLERESP *single = OCSP_resp_get0(bs, i);
        const OCSP_CERTID *theirs = OCSP_SINGLERESP_get0_id(single);
        ASN1_OBJECT *md_oid = NULL;
        const EVP_MD *md;
        OCSP_CERTID *mine;
        int same;
        if (!OCSP_id_get0_info(NULL, &md_oid, NULL, NULL, (OCSP_CERTID *)theirs) ||
            (md = EVP_get_digestbyobj(md_oid)) == NULL)
            continue;
        mine = OCSP_cert_to_id(md, leaf, issuer);
        same = mine != NULL && OCSP_id_cmp(mine, theirs) == 0;
        OCSP_CERTID_free(mine);
        if (same)
            return single;
    }
    return NULL;
}

/* Whether `der` is a good OCSP response for `leaf`, issued by `issuer`: signed by the issuer or
 * by a responder the issuer delegated to (OCSPSigning), status good, within thisUpdate and
 * nextUpdate (5 minutes of clock skew allowed). The issuer is trusted as given (it is the
 * server's own configuration, or the client's verified chain). this_update/next_update get the
 * times as seconds since the epoch (0: absent or unreadable). Leaves the error queue as it was. */
int fasttls_ocsp_check(const unsigned char *der, size_t len, X509 *leaf, X509 *issuer,
                       int64_t *this_update, int64_t *next_update)
{
    const unsigned char *p = der;
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    OCSP_SINGLERESP *single;
    X509_STORE *store = NULL;
    STACK_OF(X509) *issuers = NULL;
    ASN1_GENERALIZEDTIME *revoked_at, *thisupd = NULL, *nextupd = NULL;
    int status, reason, result = FASTTLS_OCSP_MALFORMED;
    *this_update = *next_update = 0;
    if (leaf == NULL || issuer == NULL)
        return FASTTLS_OCSP_NO_ISSUER;
    ERR_set_mark();
    if (len == 0 || len > LONG_MAX || (resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len)) == NULL ||
        p != der + len)
        goto done;
    if (OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        result = FASTTLS_OCSP_UNSUCCESSFUL;
        goto done;
    }
    if ((bs = OCSP_response_get1_basic(resp)) == NULL)
        goto done;
    /* The issuer is the one trust anchor (PARTIAL_CHAIN: it may be an intermediate). A
     * delegated responder's certificate, from the response, must chain to it. */
    result = FASTTLS_OCSP_BAD_SIGNATURE;
    if ((store = X509_STORE_new()) == NULL || !X509_STORE_add_cert(store, issuer) ||
        !X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN) ||
        (issuers = sk_X509_new_null()) == NULL || !sk_X509_push(issuers, issuer))
        goto done;
    if (OCSP_basic_verify(bs, issuers, store, 0) <= 0)
        goto done;
    result = FASTTLS_OCSP_NOT_FOR_CERT;
    if ((single = single_for(bs, leaf, issuer)) == NULL)
        goto done;
    status = OCSP_single_get0_status(single, &reason, &revoked_at, &thisupd, &nextupd);
    *this_update = epoch_of(thisupd);
    *next_update = epoch_of(nextupd);
    if (status == V_OCSP_CERTSTATUS_REVOKED)
        result = FASTTLS_OCSP_REVOKED; /* expired or not: it was revoked */
    else if (thisupd == NULL || !OCSP_check_validity(thisupd, nextupd, 300, -1))
        result = FASTTLS_OCSP_EXPIRED;
    else if (status == V_OCSP_CERTSTATUS_GOOD)
        result = FASTTLS_OCSP_GOOD;
    else
        result = FASTTLS_OCSP_UNKNOWN;
done:
    sk_X509_free(issuers); /* the issuer is the caller's: no pop_free */
    X509_STORE_free(store);
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    ERR_pop_to_mark();
    return result;
}

/* The DER OCSPRequest (SHA-1 CertID, as RFC 5019 responders expect; no nonce, so responses
 * can be cached and stapled) for `leaf` issued by `issuer`, into buf: its length, or -1 (no
 * room, or out of memory). */
int fasttls_ocsp_request(X509 *leaf, X509 *issuer, unsigned char *buf, size_t cap)
{
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    OCSP_CERTID *id = req != NULL ? OCSP_cert_to_id(NULL, leaf, issuer) : NULL;
    unsigned char *out = NULL;
    int n = -1;
    ERR_set_mark();
    if (id != NULL && OCSP_request_add0_id(req, id) != NULL) {
        id = NULL; /* the request owns it */
        n = i2d_OCSP_REQUEST(req, &out);
        if (n < 0 || (size_t)n > cap)
            n = -1;
        else
            memcpy(buf, out, (size_t)n);
    }
    OPENSSL_free(out);
    OCSP_CERTID_free(id);
    OCSP_REQUEST_free(req);
    ERR_pop_to_mark();
    return n;
}

/* Who issued `leaf`: from `chain`, else from the trust store; with a reference, or NULL. */
static X509 *issuer_of(SSL_CTX *ctx, X509 *leaf, STACK_OF(X509) *chain)
{
    X509_STORE_CTX *sctx;
    X509 *issuer = NULL;
    int i;
    for (i = 0; chain != NULL && i < sk_X509_num(chain) && issuer == NULL; i++)
        if (X509_check_issued(sk_X509_value(chain, i), leaf) == X509_V_OK)
            issuer = sk_X509_value(chain, i);
    if (issuer != NULL)
        X509_up_ref(issuer);
    if (issuer == NULL && (sctx = X509_STORE_CTX_new()) != NULL) {
        if (X509_STORE_CTX_init(sctx, SSL_CTX_get_cert_store(ctx), leaf, NULL) &&
            X509_STORE_CTX_get1_issuer(&issuer, sctx, leaf) != 1)
            issuer = NULL;
        X509_STORE_CTX_free(sctx);
    }
    if (issuer != NULL && X509_cmp(issuer, leaf) == 0) { /* self-signed: no OCSP for it */
        X509_free(issuer);
        issuer = NULL;
    }
    return issuer;
}

/* OpenSSL's i-th certificate of the context (one per key type) and its chain, walking them
 * with SSL_CTX_set_current_cert, which moves the context's "current certificate": put back
 * before returning. For contexts without identities of fasttls's own. */
static X509 *openssl_cert(SSL_CTX *ctx, int i, STACK_OF(X509) **chain)
{
    X509 *current = SSL_CTX_get0_certificate(ctx), *found = NULL;
    int k = 0, more;
    *chain = NULL;
    for (more = SSL_CTX_set_current_cert(ctx, SSL_CERT_SET_FIRST); more && found == NULL;
         more = SSL_CTX_set_current_cert(ctx, SSL_CERT_SET_NEXT)) {
        X509 *x = SSL_CTX_get0_certificate(ctx);
        if (x != NULL && k++ == i) {
            found = x;
            if (!SSL_CTX_get0_chain_certs(ctx, chain))
                *chain = NULL;
        }
    }
    if (current != NULL)
        SSL_CTX_select_current_cert(ctx, current);
    return found;
}

/* The i-th certificate served, borrowed, and its chain; NULL past the last. */
static X509 *served(SSL_CTX *ctx, int i, STACK_OF(X509) **chain)
{
    int count;
    X509 *cert = fasttls_ctx_identity(ctx, i, chain, &count);
    return count < 0 ? openssl_cert(ctx, i, chain) : cert;
}

/* The context's i-th certificate (one per key type), with a reference, and in *issuer who
 * issued it (from its chain, else the trust store; with a reference, or NULL); NULL past the
 * last. The caller holds the configuration lock for writing. */
X509 *fasttls_ctx_cert(SSL_CTX *ctx, int i, X509 **issuer)
{
    STACK_OF(X509) *chain = NULL;
    X509 *found;
    *issuer = NULL;
    ERR_set_mark();
    found = served(ctx, i, &chain);
    if (found != NULL) {
        X509_up_ref(found);
        *issuer = issuer_of(ctx, found, chain);
    }
    ERR_pop_to_mark();
    return found;
}

/* Whether `der` is an OCSP response with a status for `leaf` issued by `issuer` (signature not
 * checked: to know which certificate a given staple is for). */
int fasttls_ocsp_is_about(const unsigned char *der, size_t len, X509 *leaf, X509 *issuer)
{
    const unsigned char *p = der;
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    int about = 0;
    ERR_set_mark();
    if (leaf != NULL && issuer != NULL && len > 0 && len <= LONG_MAX &&
        (resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len)) != NULL &&
        (bs = OCSP_response_get1_basic(resp)) != NULL)
        about = single_for(bs, leaf, issuer) != NULL;
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    ERR_pop_to_mark();
    return about;
}

/* ---- the handshake ---- */

static long verify_code_of(int failure)
{
    switch (failure) {
    case FASTTLS_OCSP_REVOKED:
        return X509_V_ERR_CERT_REVOKED;
    case FASTTLS_OCSP_UNKNOWN:
        return X509_V_ERR_OCSP_CERT_UNKNOWN;
    case FASTTLS_OCSP_MISSING:
        return X509_V_ERR_OCSP_VERIFY_NEEDED;
    default:
        return X509_V_ERR_OCSP_VERIFY_FAILED;
    }
}

/* Client, require mode: the staple must be good for the server's certificate, against the
 * issuer in the verified chain. 1 to go on; 0 fails the handshake (OpenSSL then sends
 * bad_certificate_status_response), the reason kept for fasttls_conn_ocsp_failure. */
static int client_check(SSL *ssl)
{
    fasttls_conn *c = SSL_get_app_data(ssl);
    const unsigned char *der = NULL;
    long len = SSL_get_tlsext_status_ocsp_resp(ssl, &der);
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    X509 *leaf = SSL_get0_peer_certificate(ssl);
#else
    X509 *leaf = SSL_get_peer_certificate(ssl); /* a reference: freed below */
#endif
    STACK_OF(X509) *chain = SSL_get0_verified_chain(ssl);
    X509 *issuer = chain != NULL && sk_X509_num(chain) > 1 ? sk_X509_value(chain, 1) : NULL;
    int64_t this_update, next_update;
    int failure;
    if (der == NULL || len <= 0)
        failure = FASTTLS_OCSP_MISSING;
    else
        failure = fasttls_ocsp_check(der, (size_t)len, leaf, issuer, &this_update, &next_update);
#if OPENSSL_VERSION_NUMBER < 0x30000000L
    X509_free(leaf); /* the SSL keeps its own reference: the pointer stays valid below */
#endif
    if (failure == FASTTLS_OCSP_GOOD)
        return 1;
    SSL_set_ex_data(ssl, failure_index, (void *)(intptr_t)failure);
    SSL_set_verify_result(ssl, verify_code_of(failure));
    if (c != NULL && c->verify_code == 0) {
        c->verify_code = verify_code_of(failure);
        c->verify_depth = 0;
        c->verify_subject[0] = '\0';
        if (leaf != NULL)
            X509_NAME_oneline(X509_get_subject_name(leaf), c->verify_subject,
                              sizeof(c->verify_subject));
    }
    return 0;
}

/* Server: a copy of the staple for the certificate chosen for this connection (else the one
 * for any certificate); OpenSSL frees it with the SSL. The context is the one the SSL uses now,
 * so an SNI switch staples the chosen context's. */
static int server_staple(SSL *ssl, struct ocsp_conf *conf)
{
    X509 *cert = SSL_get_certificate(ssl);
    struct staple *st = NULL;
    unsigned char *copy = NULL;
    size_t len = 0;
    int i;
    if (conf == NULL || !CRYPTO_THREAD_read_lock(conf->lock))
        return SSL_TLSEXT_ERR_NOACK;
    for (i = 0; i < conf->n_staples; i++) {
        struct staple *candidate = &conf->staples[i];
        if (candidate->leaf == NULL ? st == NULL
                                    : cert != NULL && X509_cmp(candidate->leaf, cert) == 0)
            st = candidate;
    }
    if (st != NULL && (copy = OPENSSL_malloc(st->len)) != NULL) {
        memcpy(copy, st->der, st->len);
        len = st->len;
    }
    CRYPTO_THREAD_unlock(conf->lock);
    if (copy == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    if (!SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)len)) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

static int status_callback(SSL *ssl, void *arg)
{
    struct ocsp_conf *conf = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), conf_index);
    (void)arg;
    if (SSL_is_server(ssl))
        return server_staple(ssl, conf);
    return conf != NULL && conf->require ? client_check(ssl) : 1;
}

/* Whether the context serves `leaf` (one of its identities). Under the same lock. */
static int serves(SSL_CTX *ctx, X509 *leaf)
{
    STACK_OF(X509) *chain;
    X509 *x;
    int i;
    for (i = 0; (x = served(ctx, i, &chain)) != NULL; i++)
        if (X509_cmp(x, leaf) == 0)
            return 1;
    return 0;
}

/* Server: staple `der` on connections made from the context whose certificate is `leaf` (NULL:
 * any certificate without a staple of its own), replacing the one before; len 0 removes it,
 * and with leaf NULL too, removes every staple. 1 done, 0 out of memory or too many. The caller
 * holds the configuration lock for writing; connections of other contexts switched to this one
 * may be in a handshake still, hence conf->lock. */
int fasttls_ctx_set_ocsp_response(SSL_CTX *ctx, X509 *leaf, const unsigned char *der,
                                  size_t len)
{
    struct ocsp_conf *conf = conf_of(ctx, 1);
    struct staple fresh = {NULL, NULL, 0};
    int i, ok = 1;
    if (conf == NULL || (len && (fresh.der = OPENSSL_malloc(len)) == NULL))
        return 0;
    if (len) {
        memcpy(fresh.der, der, len);
        fresh.len = len;
        if (leaf != NULL && X509_up_ref(leaf))
            fresh.leaf = leaf;
        else if (leaf != NULL)
            ok = 0;
    }
    if (!ok || !CRYPTO_THREAD_write_lock(conf->lock)) {
        OPENSSL_free(fresh.der);
        X509_free(fresh.leaf);
        return 0;
    }
    /* Drop the staple this one replaces (all of them for "none for any"), and those of
     * certificates no longer served (replaced by set_cert: a stapler over rotating
     * certificates would fill the table otherwise), compacting. */
    ERR_set_mark();
    for (i = 0; i < conf->n_staples;) {
        struct staple *st = &conf->staples[i];
        int same = leaf == NULL ? st->leaf == NULL || len == 0
                                : st->leaf != NULL && X509_cmp(st->leaf, leaf) == 0;
        if (same || (st->leaf != NULL && !serves(ctx, st->leaf))) {
            X509_free(st->leaf);
            OPENSSL_free(st->der);
            *st = conf->staples[--conf->n_staples];
        } else {
            i++;
        }
    }
    ERR_pop_to_mark();
    if (len && conf->n_staples < STAPLES_MAX)
        conf->staples[conf->n_staples++] = fresh;
    else if (len)
        ok = 0;
    CRYPTO_THREAD_unlock(conf->lock);
    if (!ok) {
        OPENSSL_free(fresh.der);
        X509_free(fresh.leaf);
        return 0;
    }
    SSL_CTX_set_tlsext_status_cb(ctx, status_callback);
    return 1;
}

/* Client: ask servers for a staple (status_request) on connections made from the context
 * afterwards; with `require`, fail handshakes without a good one. 1 done, 0 out of memory. */
int fasttls_ctx_set_ocsp_client(SSL_CTX *ctx, int request, int require)
{
    struct ocsp_conf *conf = conf_of(ctx, 1);
    if (conf == NULL)
        return 0;
    conf->require = require;
    SSL_CTX_set_tlsext_status_type(ctx, request || require ? TLSEXT_STATUSTYPE_ocsp : -1);
    SSL_CTX_set_tlsext_status_cb(ctx, status_callback);
    return 1;
}

/* Client, before the handshake: send status_request on this connection, whatever its context
 * said when it was made (a connection made before ocsp_stapling or require_ocsp_staple was set,
 * or switched to such a context, must ask too: require mode checks only what was asked for). */
int fasttls_conn_request_ocsp(fasttls_conn *c)
{
    if (c->ssl == NULL || SSL_is_server(c->ssl))
        return 0;
    return SSL_set_tlsext_status_type(c->ssl, TLSEXT_STATUSTYPE_ocsp) == 1;
}

/* The staple the server sent (client side), pointing into the SSL object: its length, or -1
 * if none (not asked for, none sent, or a resumed session). */
long fasttls_conn_ocsp_response(fasttls_conn *c, const unsigned char **der)
{
    long len;
    *der = NULL;
    if (c->ssl == NULL || SSL_is_server(c->ssl))
        return -1;
    len = SSL_get_tlsext_status_ocsp_resp(c->ssl, der);
    return *der != NULL && len > 0 ? len : -1;
}

/* Why require mode failed the handshake (a FASTTLS_OCSP_* code), or 0. */
int fasttls_conn_ocsp_failure(fasttls_conn *c)
{
    if (c->ssl == NULL)
        return 0;
    return (int)(intptr_t)SSL_get_ex_data(c->ssl, failure_index);
}
