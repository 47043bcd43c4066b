/* Keyless: a certificate whose private key is not in the process. The one private-key operation
 * of a server handshake (the TLS 1.3 CertificateVerify signature, the TLS 1.2 ECDHE
 * ServerKeyExchange signature) is handed to the application, and the handshake pauses until it
 * answers.
 *
 * How, on OpenSSL 3.0 without the deprecated RSA_METHOD/EC_KEY_METHOD/ENGINE:
 *   - an in-process provider ("fasttls-keyless", added with OSSL_PROVIDER_add_builtin, in a
 *     library context of its own: see provider_load) supplies a key manager and a signature
 *     for "opaque" EC and RSA keys. A key holds only the certificate's public key: everything
 *     libssl asks of the private key (bits, security bits, maximum signature size, group, type
 *     names, whether it matches the certificate) is answered from it, and the private half
 *     refuses export, so libssl never moves the key to another provider;
 *   - connections of a keyless context run their handshake with SSL_MODE_ASYNC, i.e. inside an
 *     ASYNC job. The signature operation records the whole to-be-signed message (TLS 1.3: 64
 *     spaces, the context string, a zero byte and the transcript hash; TLS 1.2: both randoms
 *     and the ECDHE parameters) on the connection and ASYNC_pause_job()s: SSL_do_handshake
 *     returns SSL_ERROR_WANT_ASYNC, fasttls_handshake returns FASTTLS_WANT_SIGN. The
 *     application answers (fasttls_sign_answer, which checks the signature against the
 *     certificate first) or fails (fasttls_sign_fail) and calls fasttls_handshake again, which
 *     resumes the job: the signature goes out, or the handshake fails with an internal_error
 *     alert.
 *
 * Rules the job imposes (measured on 3.0): it must be resumed on the thread that started it
 * (fasttls_handshake refuses otherwise, see fasttls_keyless_enter); its stack is a 32 KiB fibre
 * without a guard page, so nothing but C runs inside a keyless handshake (no Python callback:
 * the Python side refuses those combinations, and the SNI callback runs between handshake calls,
 * see fasttls_hello.c); SSL_free does not release a paused job, so fasttls_conn_release first
 * unwinds it (fasttls_keyless_unwind); SSL_MODE_ASYNC is cleared once the handshake is done. */
#include "fasttls_internal.h"

#if OPENSSL_VERSION_NUMBER >= 0x30000000L

#include <openssl/async.h>
#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PROVIDER_NAME "fasttls-keyless"
/* Every algorithm of the provider carries this property; our keys are made with it as the
 * query. */
#define PROVIDER_PROPS "provider=" PROVIDER_NAME
/* The key's import parameters: the certificate's SubjectPublicKeyInfo (DER) and a flag saying
 * "this is the opaque private half" (an import without it is a public key being compared). */
#define PARAM_SPKI "fasttls-keyless-spki"
#define PARAM_PRIVATE "fasttls-keyless-private"
#define SIG_NAME_EC "FASTTLS-KEYLESS-ECDSA"
#define SIG_NAME_RSA "FASTTLS-KEYLESS-RSA"

/* ---- the request on the connection ---- */

enum { SIGN_NONE, SIGN_PENDING, SIGN_ANSWERED, SIGN_FAILED };

struct fasttls_sign {
    int state;
    unsigned char *data; /* the to-be-signed message */
    size_t data_len;
    int scheme;          /* TLS SignatureScheme */
    unsigned char key_id[SHA256_DIGEST_LENGTH];
    char mdname[32];
    int pss;
    EVP_PKEY *pub;       /* to check the answer (a reference) */
    unsigned char *sig;
    size_t sig_len;
    unsigned long thread; /* where the job was paused (thread_token) */
};

/* The connection whose handshake step runs on this thread: the provider's signature operation
 * has only its own context, and finds the connection here. */
static __thread fasttls_conn *current_conn;

/* Which thread a job belongs to: a number no other thread of the process ever gets (a pthread_t
 * is reused once its thread has ended, and a job must never be resumed on the thread that
 * merely inherited the id of its own). */
struct thread_rec {
    unsigned long token;
    struct thread_rec *next;
};

static unsigned long last_token;
static __thread unsigned long my_token;
/* The threads alive that have a token, for orphan() (under orphans_lock, below): each thread's
 * record is its own thread-local storage, unlisted by thread_ended before that goes. */
static __thread struct thread_rec my_rec;
static struct thread_rec *live_threads;
static pthread_mutex_t orphans_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t thread_exit_key;
static pthread_once_t thread_exit_once = PTHREAD_ONCE_INIT;
static int thread_exit_key_ok;

static void thread_ended(void *token);

static void make_thread_exit_key(void)
{
    thread_exit_key_ok = pthread_key_create(&thread_exit_key, thread_ended) == 0;
}

static unsigned long thread_token(void)
{
    if (my_token == 0) {
        my_token = __atomic_add_fetch(&last_token, 1, __ATOMIC_RELAXED);
        pthread_once(&thread_exit_once, make_thread_exit_key);
        /* Listed as alive only if thread_ended will unlist it when the thread ends. */
        if (thread_exit_key_ok &&
            pthread_setspecific(thread_exit_key, (void *)my_token) == 0) {
            my_rec.token = my_token;
            pthread_mutex_lock(&orphans_lock);
            my_rec.next = live_threads;
            live_threads = &my_rec;
            pthread_mutex_unlock(&orphans_lock);
        }
    }
    return my_token;
}

/* Under orphans_lock. */
static int thread_alive(unsigned long token)
{
    struct thread_rec *t;
    for (t = live_threads; t != NULL; t = t->next)
        if (t->token == token)
            return 1;
    return 0;
}

static void sign_clear(struct fasttls_sign *r)
{
    OPENSSL_clear_free(r->data, r->data_len);
    OPENSSL_clear_free(r->sig, r->sig_len);
    EVP_PKEY_free(r->pub);
    r->data = r->sig = NULL;
    r->data_len = r->sig_len = 0;
    r->pub = NULL;
    r->state = SIGN_NONE;
}

/* ---- keys ---- */

struct keyless_key {
    int refs;
    int rsa;
    int opaque;            /* the private half (else a public key imported to be compared) */
    EVP_PKEY *pub;         /* the certificate's public key, in the default provider */
    unsigned char key_id[SHA256_DIGEST_LENGTH];
};

static void *key_new(void *provctx)
{
    struct keyless_key *k = OPENSSL_zalloc(sizeof(*k));
    (void)provctx;
    if (k != NULL)
        k->refs = 1;
    return k;
}

static void *key_new_ec(void *provctx)
{
    return key_new(provctx);
}

static void *key_new_rsa(void *provctx)
{
    struct keyless_key *k = key_new(provctx);
    if (k != NULL)
        k->rsa = 1;
    return k;
}

static void key_free(void *kd)
{
    struct keyless_key *k = kd;
    if (k == NULL || __atomic_sub_fetch(&k->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    EVP_PKEY_free(k->pub);
    OPENSSL_free(k);
}

static int key_has(const void *kd, int selection)
{
    const struct keyless_key *k = kd;
    if (k == NULL || k->pub == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && !k->opaque)
        return 0;
    return 1;
}

static int key_import(void *kd, int selection, const OSSL_PARAM params[])
{
    struct keyless_key *k = kd;
    const OSSL_PARAM *spki = OSSL_PARAM_locate_const(params, PARAM_SPKI);
    const OSSL_PARAM *opaque = OSSL_PARAM_locate_const(params, PARAM_PRIVATE);
    EVP_PKEY_CTX *pctx;
    if (k == NULL || k->pub != NULL)
        return 0;
    if (spki != NULL) {
        /* Ours: the certificate's public key, and the promise that its private half is kept
         * by whoever answers the signing requests. */
        const unsigned char *der, *p;
        size_t len;
        int flag = 0;
        if (!OSSL_PARAM_get_octet_string_ptr(spki, (const void **)&der, &len))
            return 0;
        p = der;
        k->pub = d2i_PUBKEY_ex(NULL, &p, (long)len, NULL, "provider=default");
        if (k->pub == NULL || !EVP_PKEY_is_a(k->pub, k->rsa ? "RSA" : "EC"))
            return 0;
        SHA256(der, len, k->key_id);
        k->opaque = opaque != NULL && OSSL_PARAM_get_int(opaque, &flag) && flag;
        return 1;
    }
    /* A public key exported to us to be compared with ours (X509_check_private_key). A private
     * key given here is never kept: only the public half is imported. */
    if (!(selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY))
        return 0;
    pctx = EVP_PKEY_CTX_new_from_name(NULL, k->rsa ? "RSA" : "EC", "provider=default");
    if (pctx == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
        EVP_PKEY_fromdata(pctx, &k->pub, EVP_PKEY_PUBLIC_KEY, (OSSL_PARAM *)params) <= 0) {
        EVP_PKEY_CTX_free(pctx);
        return 0;
    }
    EVP_PKEY_CTX_free(pctx);
    return 1;
}

static const OSSL_PARAM ec_public_params[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
    OSSL_PARAM_END};

static const OSSL_PARAM rsa_public_params[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_END};

static const OSSL_PARAM *key_types_ec(int selection)
{
    (void)selection;
    return ec_public_params;
}

static const OSSL_PARAM *key_types_rsa(int selection)
{
    (void)selection;
    return rsa_public_params;
}

/* The public half only: the private half never leaves (it is not here anyway), and refusing it
 * keeps libssl from moving the key to the default provider. */
static int key_export(void *kd, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
    struct keyless_key *k = kd;
    OSSL_PARAM *params = NULL;
    int ok;
    if (k == NULL || k->pub == NULL || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY))
        return 0;
    if (EVP_PKEY_todata(k->pub, EVP_PKEY_PUBLIC_KEY, &params) <= 0)
        return 0;
    ok = cb(params, cbarg);
    OSSL_PARAM_free(params);
    return ok;
}

/* Bits, security bits, maximum signature size, group, default digest...: the certificate's. */
static int key_get_params(void *kd, OSSL_PARAM params[])
{
    struct keyless_key *k = kd;
    return k != NULL && k->pub != NULL && EVP_PKEY_get_params(k->pub, params);
}

static const OSSL_PARAM key_gettable[] = {
    OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_END};

static const OSSL_PARAM *key_gettable_params(void *provctx)
{
    (void)provctx;
    return key_gettable;
}

static int key_match(const void *kd1, const void *kd2, int selection)
{
    const struct keyless_key *a = kd1, *b = kd2;
    if (a == NULL || b == NULL || a->pub == NULL || b->pub == NULL)
        return 0;
    if (selection & OSSL_KEYMGMT_SELECT_KEYPAIR)
        return EVP_PKEY_eq(a->pub, b->pub) == 1;
    return EVP_PKEY_parameters_eq(a->pub, b->pub) == 1;
}

static const char *key_operation_ec(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE ? SIG_NAME_EC : NULL;
}

static const char *key_operation_rsa(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE ? SIG_NAME_RSA : NULL;
}

#define KEYMGMT_COMMON                                                                         \
    {OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))key_free},                                        \
        {OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))key_has},                                      \
        {OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))key_import},                                \
        {OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))key_export},                                \
        {OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))key_get_params},                        \
        {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))key_gettable_params},              \
        {OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))key_match}

static const OSSL_DISPATCH keymgmt_ec[] = {
    {OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))key_new_ec},
    KEYMGMT_COMMON,
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))key_types_ec},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))key_types_ec},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))key_operation_ec},
    {0, NULL}};

static const OSSL_DISPATCH keymgmt_rsa[] = {
    {OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))key_new_rsa},
    KEYMGMT_COMMON,
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))key_types_rsa},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))key_types_rsa},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))key_operation_rsa},
    {0, NULL}};

/* ---- the signature ---- */

struct sign_ctx {
    struct keyless_key *key;
    char mdname[32];
    int pss;
};

static void *sig_newctx(void *provctx, const char *propq)
{
    (void)provctx, (void)propq;
    return OPENSSL_zalloc(sizeof(struct sign_ctx));
}

static void sig_freectx(void *ctx)
{
    struct sign_ctx *s = ctx;
    if (s == NULL)
        return;
    key_free(s->key);
    OPENSSL_free(s);
}

static int sig_set_ctx_params(void *ctx, const OSSL_PARAM params[])
{
    struct sign_ctx *s = ctx;
    const OSSL_PARAM *p;
    if (s == NULL)
        return 0;
    if (params == NULL)
        return 1;
    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
    if (p != NULL) {
        int mode = 0;
        const char *name = NULL;
        if (p->data_type == OSSL_PARAM_UTF8_STRING && OSSL_PARAM_get_utf8_string_ptr(p, &name))
            mode = strcmp(name, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0 ? RSA_PKCS1_PSS_PADDING
                   : strcmp(name, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0 ? RSA_PKCS1_PADDING
                                                                      : 0;
        else if (!OSSL_PARAM_get_int(p, &mode))
            return 0;
        if (mode != RSA_PKCS1_PSS_PADDING && mode != RSA_PKCS1_PADDING)
            return 0;
        if (s->key != NULL && !s->key->rsa)
            return 0;
        s->pss = mode == RSA_PKCS1_PSS_PADDING;
    }
    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
    if (p != NULL) {
        /* TLS uses a salt as long as the digest (RFC 8446 4.2.3), the only length we sign. */
        int len = 0;
        const char *name = NULL;
        if (p->data_type == OSSL_PARAM_UTF8_STRING && OSSL_PARAM_get_utf8_string_ptr(p, &name)) {
            if (strcmp(name, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) != 0)
                return 0;
        } else if (!OSSL_PARAM_get_int(p, &len) || len != RSA_PSS_SALTLEN_DIGEST) {
            return 0;
        }
    }
    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST);
    if (p != NULL) {
        char *md = s->mdname;
        if (!OSSL_PARAM_get_utf8_string(p, &md, sizeof(s->mdname)))
            return 0;
    }
    return 1;
}

static const OSSL_PARAM sig_settable[] = {
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
    OSSL_PARAM_int(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL),
    OSSL_PARAM_int(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL),
    OSSL_PARAM_END};

static const OSSL_PARAM *sig_settable_ctx_params(void *ctx, void *provctx)
{
    (void)ctx, (void)provctx;
    return sig_settable;
}

/* Also run by libssl to ask whether a digest is usable with the key (check_cert_usable): no
 * side effect here, the request is made by the signature itself. */
static int sig_digest_sign_init(void *ctx, const char *mdname, void *kd, const OSSL_PARAM params[])
{
    struct sign_ctx *s = ctx;
    struct keyless_key *k = kd;
    EVP_MD *md;
    if (s == NULL || k == NULL || !k->opaque)
        return 0;
    if (mdname == NULL)
        mdname = "SHA256"; /* never the case in TLS, which always names its digest */
    /* Only digests that exist and that TLS signs with (not SHA-1 under our security level,
     * which libssl already enforces). */
    md = EVP_MD_fetch(NULL, mdname, NULL);
    if (md == NULL)
        return 0;
    OPENSSL_strlcpy(s->mdname, EVP_MD_get0_name(md), sizeof(s->mdname));
    EVP_MD_free(md);
    __atomic_add_fetch(&k->refs, 1, __ATOMIC_RELAXED);
    key_free(s->key);
    s->key = k;
    s->pss = 0;
    return sig_set_ctx_params(s, params);
}

static int hash_code(const char *md)
{
    /* TLS HashAlgorithm numbers (RFC 5246 7.4.1.4.1). */
    if (OPENSSL_strcasecmp(md, "SHA256") == 0 || OPENSSL_strcasecmp(md, "SHA2-256") == 0)
        return 4;
    if (OPENSSL_strcasecmp(md, "SHA384") == 0 || OPENSSL_strcasecmp(md, "SHA2-384") == 0)
        return 5;
    if (OPENSSL_strcasecmp(md, "SHA512") == 0 || OPENSSL_strcasecmp(md, "SHA2-512") == 0)
        return 6;
    if (OPENSSL_strcasecmp(md, "SHA224") == 0 || OPENSSL_strcasecmp(md, "SHA2-224") == 0)
        return 3;
    if (OPENSSL_strcasecmp(md, "SHA1") == 0)
        return 2;
    return 0;
}

/* The TLS SignatureScheme (RFC 8446 4.2.3) of this signature: ECDSA (hash, 3), RSA PKCS#1 v1.5
 * (hash, 1), RSA-PSS with an rsaEncryption key (0x08, 0x04 + hash - 4). */
static int scheme_of(const struct sign_ctx *s)
{
    int hash = hash_code(s->mdname);
    if (hash == 0)
        return 0;
    if (!s->key->rsa)
        return hash << 8 | 3;
    if (s->pss)
        return hash >= 4 ? 0x0800 | hash : 0;
    return hash << 8 | 1;
}

static int sig_digest_sign(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                           const unsigned char *tbs, size_t tbslen)
{
    struct sign_ctx *s = ctx;
    fasttls_conn *c = current_conn;
    struct fasttls_sign *r;
    int ok = 0;
    if (s == NULL || s->key == NULL)
        return 0;
    if (sig == NULL) {
        *siglen = (size_t)EVP_PKEY_get_size(s->key->pub);
        return 1;
    }
    if (c == NULL || ASYNC_get_current_job() == NULL || c->sign == NULL ||
        c->sign->state != SIGN_NONE) {
        /* Not inside a keyless handshake (e.g. the context was switched to from a connection
         * made without SSL_MODE_ASYNC): there is nobody to ask. */
        ERR_raise_data(ERR_LIB_EVP, EVP_R_OPERATION_NOT_SUPPORTED_FOR_THIS_KEYTYPE,
                       "keyless key used outside a keyless handshake");
        return 0;
    }
    r = c->sign;
    r->data = OPENSSL_memdup(tbs, tbslen);
    r->data_len = tbslen;
    r->scheme = scheme_of(s);
    r->pss = s->pss;
    memcpy(r->mdname, s->mdname, sizeof(r->mdname));
    memcpy(r->key_id, s->key->key_id, sizeof(r->key_id));
    r->pub = s->key->pub;
    EVP_PKEY_up_ref(r->pub);
    r->thread = thread_token();
    if (r->data == NULL || r->scheme == 0) {
        sign_clear(r);
        ERR_raise_data(ERR_LIB_EVP, EVP_R_OPERATION_NOT_SUPPORTED_FOR_THIS_KEYTYPE,
                       r->scheme == 0 ? "no TLS signature scheme for this digest"
                                      : "out of memory");
        return 0;
    }
    r->state = SIGN_PENDING;
    /* Paused until the answer (or a failure) is in; a resume without one pauses again. */
    while (r->state == SIGN_PENDING) {
        if (!ASYNC_pause_job()) {
            r->state = SIGN_FAILED;
            break;
        }
    }
    if (r->state == SIGN_ANSWERED && r->sig_len <= sigsize) {
        memcpy(sig, r->sig, r->sig_len);
        *siglen = r->sig_len;
        ok = 1;
    } else {
        ERR_raise_data(ERR_LIB_EVP, EVP_R_OPERATION_NOT_SUPPORTED_FOR_THIS_KEYTYPE,
                       "the keyless signature failed");
    }
    sign_clear(r);
    return ok;
}

static const OSSL_DISPATCH signature_functions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))sig_newctx},
    {OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))sig_freectx},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))sig_digest_sign_init},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN, (void (*)(void))sig_digest_sign},
    {OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))sig_set_ctx_params},
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))sig_settable_ctx_params},
    {0, NULL}};

/* ---- the provider ---- */

static const OSSL_ALGORITHM keymgmt_algorithms[] = {
    /* The names libssl tells key types apart by (EVP_PKEY_is_a with the certificate NIDs' short
     * names, "RSA" for the padding controls): why the provider has a library context of its
     * own (see provider_load). */
    {"EC:id-ecPublicKey", PROVIDER_PROPS, keymgmt_ec, "fasttls keyless EC key"},
    {"RSA:rsaEncryption", PROVIDER_PROPS, keymgmt_rsa, "fasttls keyless RSA key"},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM signature_algorithms[] = {
    {SIG_NAME_EC, PROVIDER_PROPS, signature_functions, "keyless ECDSA"},
    {SIG_NAME_RSA, PROVIDER_PROPS, signature_functions, "keyless RSA"},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM *provider_query(void *provctx, int operation_id, int *no_cache)
{
    (void)provctx;
    *no_cache = 0;
    switch (operation_id) {
    case OSSL_OP_KEYMGMT:
        return keymgmt_algorithms;
    case OSSL_OP_SIGNATURE:
        return signature_algorithms;
    }
    return NULL;
}

static const OSSL_DISPATCH provider_functions[] = {
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))provider_query}, {0, NULL}};

static int provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                         const OSSL_DISPATCH **out, void **provctx)
{
    (void)handle, (void)in;
    *out = provider_functions;
    *provctx = (void *)provider_functions; /* any non-NULL: we keep no state */
    return 1;
}

/* The provider lives in a library context of its own, not in the default one that libssl and
 * everything else fetch from. Its key manager must carry the names "EC" and "RSA" (libssl tells
 * key types apart by them), and in one shared method store an unqualified fetch of "EC" can then
 * come back with ours: measured on 3.0, once a signature operation had fetched the key manager
 * from our provider (do_sigver_init does), the method cache answered later plain fetches of
 * "EC" with it, and new contexts lost their EC groups ("group 'P-256' cannot be set"). Nothing
 * needs ours to be found by name: libssl uses the key's own key manager, and finds the
 * signature in the key manager's provider (do_sigver_init's second lookup) by the name our
 * key manager gives it, which no other provider has. */
static OSSL_LIB_CTX *provider_libctx;
static OSSL_PROVIDER *provider;
static pthread_once_t provider_once = PTHREAD_ONCE_INIT;

static void provider_load(void)
{
    provider_libctx = OSSL_LIB_CTX_new();
    if (provider_libctx != NULL &&
        OSSL_PROVIDER_add_builtin(provider_libctx, PROVIDER_NAME, provider_init))
        provider = OSSL_PROVIDER_load(provider_libctx, PROVIDER_NAME);
}

static int provider_ready(void)
{
    pthread_once(&provider_once, provider_load);
    return provider != NULL;
}

/* ---- the context ---- */

/* The certificate chain of a keyless identity: the leaf's public key becomes an opaque key of
 * the provider. Returns what fasttls_ctx_use_identity returns (1, 0 chain unreadable, -1 key
 * refused); the error stays on the queue. */
int fasttls_ctx_use_keyless(SSL_CTX *ctx, const char *chain_pem, size_t chain_len, int how)
{
    STACK_OF(X509) *chain = NULL;
    X509 *cert;
    EVP_PKEY *pub, *key = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *der = NULL;
    int der_len, opaque = 1, rsa;
    OSSL_PARAM params[3];
    ERR_clear_error();
    cert = fasttls_read_chain(chain_pem, chain_len, &chain);
    if (cert == NULL)
        return 0;
    pub = X509_get0_pubkey(cert);
    rsa = pub != NULL && EVP_PKEY_is_a(pub, "RSA");
    if (pub == NULL || (!rsa && !EVP_PKEY_is_a(pub, "EC"))) {
        ERR_raise_data(ERR_LIB_EVP, EVP_R_UNSUPPORTED_KEY_TYPE,
                       "keyless certificates must have an EC or RSA (rsaEncryption) key");
        goto fail;
    }
    if (!provider_ready()) {
        ERR_raise_data(ERR_LIB_EVP, EVP_R_INITIALIZATION_ERROR, "cannot load the keyless provider");
        goto fail;
    }
    der_len = i2d_PUBKEY(pub, &der);
    if (der_len <= 0)
        goto fail;
    params[0] = OSSL_PARAM_construct_octet_string(PARAM_SPKI, der, (size_t)der_len);
    params[1] = OSSL_PARAM_construct_int(PARAM_PRIVATE, &opaque);
    params[2] = OSSL_PARAM_construct_end();
    pctx = EVP_PKEY_CTX_new_from_name(provider_libctx, rsa ? "RSA" : "EC", PROVIDER_PROPS);
    if (pctx == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
        EVP_PKEY_fromdata(pctx, &key, EVP_PKEY_KEYPAIR, params) <= 0)
        goto fail;
    EVP_PKEY_CTX_free(pctx);
    OPENSSL_free(der);
    return fasttls_ctx_install_identity(ctx, cert, chain, key, how);
fail:
    EVP_PKEY_CTX_free(pctx);
    OPENSSL_free(der);
    X509_free(cert);
    sk_X509_pop_free(chain, X509_free);
    return -1;
}

int fasttls_key_is_keyless(const EVP_PKEY *key)
{
    return key != NULL && provider != NULL && EVP_PKEY_get0_provider(key) == provider;
}

/* ---- connections ---- */

static void adopt_orphans(void); /* see "ending paused jobs" */

int fasttls_keyless_prepare(fasttls_conn *c)
{
    if (c->sign == NULL && (c->sign = calloc(1, sizeof(*c->sign))) == NULL)
        return 0;
    SSL_set_mode(c->ssl, SSL_MODE_ASYNC);
    return 1;
}

int fasttls_keyless_enter(fasttls_conn *c)
{
    if (c->sign != NULL && c->sign->state != SIGN_NONE &&
        c->sign->thread != thread_token()) {
        ERR_raise_data(ERR_LIB_SSL, ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED,
                       "a keyless handshake must be resumed on the thread that started it");
        return 0;
    }
    adopt_orphans();
    current_conn = c;
    return 1;
}

void fasttls_keyless_leave(fasttls_conn *c)
{
    (void)c;
    current_conn = NULL;
}

int fasttls_keyless_waiting(fasttls_conn *c)
{
    return c->sign != NULL && c->sign->state == SIGN_PENDING;
}

/* ---- ending paused jobs ----
 *
 * SSL_free does not end a paused job (its fibre, its stack, what it holds would leak): before
 * SSL_free, the job is resumed with the request failed, and ends. Only on its own thread,
 * though. A connection released on another thread (a garbage collection there) gives its SSL
 * to that thread instead, as an orphan: detached from the connection (a null BIO, no app data:
 * the connection's memory goes now), ended and freed by the next handshake step the owning
 * thread runs. A job whose thread has ended (or ends first) cannot be ended by anyone: its SSL
 * is left behind, a leak, never a crash (see thread_ended). */

struct orphan {
    struct orphan *next;
    SSL *ssl;
    struct fasttls_sign *sign;
};

static struct orphan *orphans;
static int orphan_count; /* read without the lock on the fast path: 0 almost always */

static void end_job(SSL *ssl, struct fasttls_sign *r)
{
    fasttls_conn *was = current_conn;
    r->state = SIGN_FAILED;
    current_conn = NULL; /* the job reads its request, not this, once resumed */
    SSL_do_handshake(ssl); /* the signature fails, the handshake with it, the job ends */
    current_conn = was;
    ERR_clear_error();
}

/* The orphans of `token` taken off the list. */
static struct orphan *take_orphans(unsigned long token)
{
    struct orphan *mine = NULL, **p, *o;
    pthread_mutex_lock(&orphans_lock);
    for (p = &orphans; (o = *p) != NULL;) {
        if (o->sign->thread == token) {
            *p = o->next;
            o->next = mine;
            mine = o;
            __atomic_sub_fetch(&orphan_count, 1, __ATOMIC_RELAXED);
        } else {
            p = &o->next;
        }
    }
    pthread_mutex_unlock(&orphans_lock);
    return mine;
}

static void adopt_orphans(void)
{
    struct orphan *mine, *o;
    if (__atomic_load_n(&orphan_count, __ATOMIC_RELAXED) == 0)
        return;
    mine = take_orphans(thread_token());
    while ((o = mine) != NULL) {
        mine = o->next;
        end_job(o->ssl, o->sign);
        SSL_free(o->ssl);
        sign_clear(o->sign);
        free(o->sign);
        free(o);
    }
}

/* A thread ended with orphans: nobody may resume their jobs any more. They are dropped from
 * the list (so that other threads' steps stop looking), their SSL objects and jobs left as they
 * are: a leak, never a crash. */
static void thread_ended(void *token)
{
    struct thread_rec **t;
    struct orphan *gone, *o;
    pthread_mutex_lock(&orphans_lock);
    for (t = &live_threads; *t != NULL; t = &(*t)->next)
        if ((*t)->token == (unsigned long)token) {
            *t = (*t)->next;
            break;
        }
    pthread_mutex_unlock(&orphans_lock);
    gone = take_orphans((unsigned long)token);
    while ((o = gone) != NULL) {
        gone = o->next;
        free(o);
    }
}

static int orphan(fasttls_conn *c)
{
    struct orphan *o = malloc(sizeof(*o));
    BIO *null = BIO_new(BIO_s_null());
    if (o == NULL || null == NULL) {
        free(o);
        BIO_free(null);
        return 0;
    }
    pthread_mutex_lock(&orphans_lock);
    if (!thread_alive(c->sign->thread)) {
        /* Its thread has ended: nobody can end the job. The SSL stays with it (a leak). */
        pthread_mutex_unlock(&orphans_lock);
        free(o);
        BIO_free(null);
        c->ssl = NULL;
        c->sign = NULL;
        return 1;
    }
    SSL_set_bio(c->ssl, null, null); /* the connection's BIO, and its buffers, let go */
    SSL_set_app_data(c->ssl, NULL);  /* callbacks see no connection */
    o->ssl = c->ssl;
    o->sign = c->sign;
    o->next = orphans;
    orphans = o;
    __atomic_add_fetch(&orphan_count, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&orphans_lock);
    c->ssl = NULL;
    c->sign = NULL;
    return 1;
}

int fasttls_keyless_orphans(void)
{
    return __atomic_load_n(&orphan_count, __ATOMIC_RELAXED);
}

void fasttls_keyless_unwind(fasttls_conn *c)
{
    struct fasttls_sign *r = c->sign;
    if (r == NULL)
        return;
    if (r->state != SIGN_NONE && c->ssl != NULL) {
        if (r->thread == thread_token())
            end_job(c->ssl, r);
        else if (orphan(c))
            return;
        else
            c->ssl = NULL; /* no memory even for that: the SSL stays with its job (a leak) */
    }
    sign_clear(r);
    free(r);
    c->sign = NULL;
}

const unsigned char *fasttls_sign_data(fasttls_conn *c, size_t *len)
{
    if (!fasttls_keyless_waiting(c)) {
        *len = 0;
        return NULL;
    }
    *len = c->sign->data_len;
    return c->sign->data;
}

int fasttls_sign_scheme(fasttls_conn *c)
{
    return fasttls_keyless_waiting(c) ? c->sign->scheme : 0;
}

const unsigned char *fasttls_sign_key_id(fasttls_conn *c)
{
    return fasttls_keyless_waiting(c) ? c->sign->key_id : NULL;
}

/* The signature, checked against the certificate's public key before it may go out (a key
 * server answering with another key's signature would otherwise surface as the client's
 * decrypt_error). FASTTLS_SIGN_OK, else the request is failed and: FASTTLS_SIGN_NONE (nothing
 * was asked), FASTTLS_SIGN_BAD_LENGTH, FASTTLS_SIGN_BAD_SIGNATURE. */
int fasttls_sign_answer(fasttls_conn *c, const unsigned char *sig, size_t len)
{
    struct fasttls_sign *r = c->sign;
    EVP_MD_CTX *mctx;
    EVP_PKEY_CTX *pctx = NULL;
    size_t max;
    int ok;
    if (!fasttls_keyless_waiting(c))
        return FASTTLS_SIGN_NONE;
    max = (size_t)EVP_PKEY_get_size(r->pub);
    if (len == 0 || len > max || (EVP_PKEY_is_a(r->pub, "RSA") && len != max)) {
        r->state = SIGN_FAILED;
        return FASTTLS_SIGN_BAD_LENGTH;
    }
    mctx = EVP_MD_CTX_new();
    ok = mctx != NULL &&
         EVP_DigestVerifyInit_ex(mctx, &pctx, r->mdname, NULL, "provider=default", r->pub,
                                 NULL) > 0 &&
         (!r->pss || (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
                      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0)) &&
         EVP_DigestVerify(mctx, sig, len, r->data, r->data_len) == 1;
    EVP_MD_CTX_free(mctx);
    ERR_clear_error();
    if (!ok || (r->sig = OPENSSL_memdup(sig, len)) == NULL) {
        r->state = SIGN_FAILED;
        return FASTTLS_SIGN_BAD_SIGNATURE;
    }
    r->sig_len = len;
    r->state = SIGN_ANSWERED;
    return FASTTLS_SIGN_OK;
}

void fasttls_sign_fail(fasttls_conn *c)
{
    if (fasttls_keyless_waiting(c))
        c->sign->state = SIGN_FAILED;
}

#else /* OpenSSL 1.1.1: no providers */

int fasttls_ctx_use_keyless(SSL_CTX *ctx, const char *chain_pem, size_t chain_len, int how)
{
    (void)ctx, (void)chain_pem, (void)chain_len, (void)how;
    ERR_raise(ERR_LIB_SSL, ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED);
    return -1;
}
int fasttls_key_is_keyless(const EVP_PKEY *key) { (void)key; return 0; }
int fasttls_keyless_prepare(fasttls_conn *c) { (void)c; return 0; }
int fasttls_keyless_enter(fasttls_conn *c) { (void)c; return 1; }
void fasttls_keyless_leave(fasttls_conn *c) { (void)c; }
int fasttls_keyless_waiting(fasttls_conn *c) { (void)c; return 0; }
void fasttls_keyless_unwind(fasttls_conn *c) { (void)c; }
int fasttls_keyless_orphans(void) { return 0; }
const unsigned char *fasttls_sign_data(fasttls_conn *c, size_t *len)
{
    (void)c;
    *len = 0;
    return NULL;
}
int fasttls_sign_scheme(fasttls_conn *c) { (void)c; return 0; }
const unsigned char *fasttls_sign_key_id(fasttls_conn *c) { (void)c; return NULL; }
int fasttls_sign_answer(fasttls_conn *c, const unsigned char *sig, size_t len)
{
    (void)c, (void)sig, (void)len;
    return FASTTLS_SIGN_NONE;
}
void fasttls_sign_fail(fasttls_conn *c) { (void)c; }

#endif
