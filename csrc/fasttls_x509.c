/* Certificates and keys: PEM parsing, trust stores, decoding for getpeercert(), and the
 * self-signed certificate of `python -m fasttls bench`. */
#include "fasttls_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

/* ---- reading certificates and keys ---- */

/* A read-only memory BIO over the caller's bytes. BIO_new_mem_buf takes an int length, and -1
 * means "up to the first NUL": a length that does not fit is refused, never narrowed. */
static BIO *mem_bio(const void *data, size_t len)
{
    if (len > INT_MAX) {
        ERR_raise(ERR_LIB_BIO, ERR_R_PASSED_INVALID_ARGUMENT);
        return NULL;
    }
    return BIO_new_mem_buf(data, (int)len);
}

struct password {
    const char *data;
    size_t len;
};

/* Never prompt on a terminal (OpenSSL's default without a callback): no password is an error,
 * and so is one longer than OpenSSL's buffer (`size`, 1024 bytes), never cut to fit. */
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
X509 *fasttls_read_chain(const char *pem, size_t len, STACK_OF(X509) **chain)
{
    BIO *b = mem_bio(pem, len);
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

/* A private key from PEM; NULL if unreadable or if the password does not decrypt it. */
EVP_PKEY *fasttls_read_key(const char *pem, size_t len, const char *password, size_t password_len)
{
    struct password pw = {password, password_len};
    EVP_PKEY *key = NULL;
    BIO *b = mem_bio(pem, len);
    if (b != NULL) {
        key = PEM_read_bio_PrivateKey(b, NULL, password_callback, &pw);
        BIO_free(b);
    }
    return key;
}

/* Trust anchors from memory, PEM or concatenated DER; returns how many were added, 0 when the
 * data holds no certificate at all, -1 on an error (after some, or in the store); the error
 * stays on the queue for the caller. */
int fasttls_store_add_ca(X509_STORE *store, const unsigned char *data, size_t len, int pem)
{
    const unsigned char *p = data;
    BIO *b = NULL;
    X509 *x;
    int count = 0;
    /* d2i_X509 takes a long: as for the BIO's int, refuse what does not fit. */
    if ((pem && (b = mem_bio(data, len)) == NULL) || (!pem && len > LONG_MAX))
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
    else if (count > 0)
        count = -1;
    return count;
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

/* The i-th certificate (a new reference) of the peer's chain, leaf first, or NULL past its end:
 * the chain as verified (SSL_get0_verified_chain, up to the trust anchor), or as the peer sent
 * it. OpenSSL leaves the leaf out of a server's view of what the client sent: it is put back,
 * as the stdlib's get_unverified_chain() does. */
X509 *fasttls_conn_chain_cert(fasttls_conn *c, int verified, int i)
{
    STACK_OF(X509) *chain;
    X509 *x;
    int offset = 0;
    if (c->ssl == NULL || i < 0)
        return NULL;
    chain = verified ? SSL_get0_verified_chain(c->ssl) : SSL_get_peer_cert_chain(c->ssl);
    if (chain == NULL)
        return NULL;
    if (!verified && SSL_is_server(c->ssl)) {
        if (i == 0)
            return fasttls_peer_certificate(c->ssl);
        offset = 1;
    }
    if (i - offset >= sk_X509_num(chain))
        return NULL;
    x = sk_X509_value(chain, i - offset);
    if (x != NULL)
        X509_up_ref(x);
    return x;
}

/* The cipher suites both ends offered, in the server's order (the stdlib's shared_ciphers()):
 * up to `max` of them into `out`, their count returned; -1 where OpenSSL keeps no list of the
 * client's (on the client side). */
int fasttls_conn_shared_ciphers(fasttls_conn *c, const SSL_CIPHER **out, int max)
{
    STACK_OF(SSL_CIPHER) *ours, *theirs;
    int i, n = 0;
    if (c->ssl == NULL)
        return -1;
    ours = SSL_get_ciphers(c->ssl);
    theirs = SSL_get_client_ciphers(c->ssl);
    if (ours == NULL || theirs == NULL)
        return -1;
    for (i = 0; i < sk_SSL_CIPHER_num(ours) && n < max; i++) {
        const SSL_CIPHER *cipher = sk_SSL_CIPHER_value(ours, i);
        if (sk_SSL_CIPHER_find(theirs, (SSL_CIPHER *)cipher) >= 0)
            out[n++] = cipher;
    }
    return n;
}

/* The decoders below leave the error queue empty whatever happens: their failures are
 * reported as a missing field, never as an OpenSSL error. */

int fasttls_x509_der(X509 *x, unsigned char **der)
{
    int n;
    *der = NULL;
    if ((n = i2d_X509(x, der)) < 0)
        ERR_clear_error();
    return n;
}

/* Entry i of a name: its RDN set index, its field name ("commonName") and its UTF-8 value
 * (to be freed with fasttls_free). Returns the value's length, or -1. */
int fasttls_name_entry(X509_NAME *name, int i, int *set, char *field, size_t field_len,
                       unsigned char **value)
{
    X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
    int n = -1;
    *value = NULL;
    if (e != NULL) {
        *set = X509_NAME_ENTRY_set(e);
        /* Less room than there is is harmless; a narrowed size could be negative. */
        if (OBJ_obj2txt(field, field_len > INT_MAX ? INT_MAX : (int)field_len,
                        X509_NAME_ENTRY_get_object(e), 0) > 0)
            n = ASN1_STRING_to_UTF8(value, X509_NAME_ENTRY_get_data(e));
    }
    if (n < 0)
        ERR_clear_error();
    return n;
}

/* notBefore/notAfter as the stdlib shows them: "Jun  1 12:00:00 2030 GMT". */
int fasttls_x509_time(X509 *x, int not_after, char *buf, size_t len)
{
    BIO *b;
    int n = -1;
    if (len == 0)
        return -1;
    if ((b = BIO_new(BIO_s_mem())) != NULL &&
        ASN1_TIME_print(b, not_after ? X509_get0_notAfter(x) : X509_get0_notBefore(x)))
        n = BIO_read(b, buf, len > INT_MAX ? INT_MAX : (int)len - 1);
    BIO_free(b);
    if (n >= 0)
        buf[n] = '\0';
    else
        ERR_clear_error();
    return n;
}

/* The serial number as the stdlib shows it (i2a_ASN1_INTEGER: upper-case hex in pairs, "00"
 * for zero, where BN_bn2hex would write "0"). */
int fasttls_x509_serial(X509 *x, char *buf, size_t len)
{
    BIO *b = BIO_new(BIO_s_mem());
    int n = -1, ok;
    if (b != NULL && i2a_ASN1_INTEGER(b, X509_get0_serialNumber(x)) >= 0)
        n = BIO_read(b, buf, len > INT_MAX ? INT_MAX : (int)len);
    BIO_free(b);
    ok = n > 0 && (size_t)n < len;
    if (ok)
        buf[n] = '\0';
    else
        ERR_clear_error();
    return ok;
}

static unsigned char *copy_bytes(const void *data, int n)
{
    unsigned char *p = n > 0 ? OPENSSL_malloc((size_t)n) : NULL;
    if (p != NULL)
        memcpy(p, data, (size_t)n);
    return p;
}

/* subjectAltName entry i: its GEN_* type and value (to be freed with fasttls_free), as the
 * stdlib's getpeercert() takes it: the raw bytes of DNS, email, URI and IP entries; the text of
 * a registered ID (i2t_ASN1_OBJECT); GENERAL_NAME_print's "kind:value" text for the others
 * (otherName, X400, EDI party); nothing for a directory name (see fasttls_x509_san_dirname).
 * Returns the value's length, or -1 past the end. */
int fasttls_x509_san(X509 *x, int i, int *type, unsigned char **value)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    GENERAL_NAME *g;
    const ASN1_STRING *s = NULL;
    char text[2048];
    BIO *b;
    int n = -1;
    *value = NULL;
    if (names == NULL || i < 0 || i >= sk_GENERAL_NAME_num(names))
        goto done;
    g = sk_GENERAL_NAME_value(names, i);
    *type = g->type;
    n = 0;
    switch (g->type) {
    case GEN_DNS:
    case GEN_EMAIL:
    case GEN_URI:
        s = g->d.ia5;
        break;
    case GEN_IPADD:
        s = g->d.ip;
        break;
    case GEN_DIRNAME:
        break;
    case GEN_RID:
        n = i2t_ASN1_OBJECT(text, sizeof(text) - 1, g->d.rid);
        n = n > 0 && n < (int)sizeof(text) - 1 ? n : 0;
        *value = copy_bytes(text, n);
        break;
    default:
        if ((b = BIO_new(BIO_s_mem())) != NULL && GENERAL_NAME_print(b, g) > 0)
            n = BIO_gets(b, text, sizeof(text) - 1);
        BIO_free(b);
        *value = copy_bytes(text, n > 0 ? n : 0);
        break;
    }
    if (s != NULL)
        *value = copy_bytes(ASN1_STRING_get0_data(s), n = ASN1_STRING_length(s));
    if (*value == NULL)
        n = 0;
done:
    GENERAL_NAMES_free(names);
    ERR_clear_error();
    return n;
}

/* The directory name of subjectAltName entry i (a copy, for X509_NAME_free), or NULL. */
X509_NAME *fasttls_x509_san_dirname(X509 *x, int i)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    GENERAL_NAME *g;
    X509_NAME *name = NULL;
    if (names != NULL && i >= 0 && i < sk_GENERAL_NAME_num(names)) {
        g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_DIRNAME)
            name = X509_NAME_dup(g->d.dirn);
    }
    GENERAL_NAMES_free(names);
    ERR_clear_error();
    return name;
}

/* URI i of a certificate's OCSP responders (FASTTLS_URI_OCSP), CA issuers
 * (FASTTLS_URI_CA_ISSUERS, both from authorityInfoAccess) or CRL distribution points
 * (FASTTLS_URI_CRL, full names only), to be freed with fasttls_free, as the stdlib lists them.
 * Returns its length, -1 past the end, -2 if the certificate has no such extension (or an
 * empty one). */
int fasttls_x509_uri(X509 *x, int which, int i, unsigned char **value)
{
    const ASN1_IA5STRING *found = NULL;
    int j, k, seen = 0, n = -2;
    *value = NULL;
    if (which == FASTTLS_URI_CRL) {
        CRL_DIST_POINTS *dps = X509_get_ext_d2i(x, NID_crl_distribution_points, NULL, NULL);
        for (j = 0; dps != NULL && found == NULL && j < sk_DIST_POINT_num(dps); j++) {
            DIST_POINT *dp = sk_DIST_POINT_value(dps, j);
            GENERAL_NAMES *gns;
            /* No name (CVE-2019-5010), or a name relative to the issuer: no URI. */
            if (dp->distpoint == NULL || dp->distpoint->type != 0)
                continue;
            gns = dp->distpoint->name.fullname;
            for (k = 0; found == NULL && k < sk_GENERAL_NAME_num(gns); k++) {
                GENERAL_NAME *g = sk_GENERAL_NAME_value(gns, k);
                if (g->type == GEN_URI && seen++ == i)
                    found = g->d.uniformResourceIdentifier;
            }
        }
        /* The stdlib leaves the field out when no distribution point has a URI. */
        n = seen > 0 || found != NULL ? -1 : -2;
        if (found != NULL)
            *value = copy_bytes(ASN1_STRING_get0_data(found), n = ASN1_STRING_length(found));
        CRL_DIST_POINTS_free(dps);
    } else {
        AUTHORITY_INFO_ACCESS *info = X509_get_ext_d2i(x, NID_info_access, NULL, NULL);
        int nid = which == FASTTLS_URI_OCSP ? NID_ad_OCSP : NID_ad_ca_issuers;
        if (info != NULL && sk_ACCESS_DESCRIPTION_num(info) > 0)
            n = -1;
        for (j = 0; info != NULL && found == NULL && j < sk_ACCESS_DESCRIPTION_num(info); j++) {
            ACCESS_DESCRIPTION *ad = sk_ACCESS_DESCRIPTION_value(info, j);
            if (OBJ_obj2nid(ad->method) == nid && ad->location->type == GEN_URI && seen++ == i)
                found = ad->location->d.uniformResourceIdentifier;
        }
        if (found != NULL)
            *value = copy_bytes(ASN1_STRING_get0_data(found), n = ASN1_STRING_length(found));
        AUTHORITY_INFO_ACCESS_free(info);
    }
    if (found != NULL && *value == NULL)
        n = 0;
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

