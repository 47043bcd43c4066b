/* Signing with a private key held in this process: the key server's half of keyless TLS.
 *
 * A key is loaded from PEM once and then only read, so any number of threads may sign with it at
 * once (each signature gets its own EVP_MD_CTX). Every call here holds no Python state, and cffi
 * releases the GIL around it, so the key server can sign on several threads.
 *
 * The schemes are TLS SignatureScheme code points (RFC 8446 4.2.3). A scheme is accepted only
 * for the key it names: ECDSA schemes name their curve (as TLS 1.3 does), PSS and PKCS#1 need
 * an RSA key. */
#include "fasttls_internal.h"

#include <string.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/core_names.h>
#else
#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#endif

EVP_PKEY *fasttls_key_load(const char *pem, size_t len, const char *password, size_t password_len)
{
    EVP_PKEY *key = fasttls_read_key(pem, len, password, password_len);
    if (key != NULL && fasttls_key_type(key) == FASTTLS_KEY_UNSUPPORTED) {
        EVP_PKEY_free(key);
        ERR_raise(ERR_LIB_EVP, EVP_R_UNSUPPORTED_ALGORITHM);
        return NULL;
    }
    return key;
}

void fasttls_key_free(EVP_PKEY *key)
{
    EVP_PKEY_free(key);
}

/* The named curve of an EC key, as an OpenSSL NID; NID_undef for any other key. */
static int ec_curve(EVP_PKEY *key)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    char name[64];
    size_t len = 0;
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC
        || !EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof name,
                                           &len))
        return NID_undef;
    return OBJ_sn2nid(name) != NID_undef ? OBJ_sn2nid(name) : OBJ_txt2nid(name);
#else
    const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(key);
    return ec != NULL && EC_KEY_get0_group(ec) != NULL
               ? EC_GROUP_get_curve_name(EC_KEY_get0_group(ec))
               : NID_undef;
#endif
}

int fasttls_key_type(EVP_PKEY *key)
{
    switch (EVP_PKEY_base_id(key)) {
    case EVP_PKEY_RSA:
        return FASTTLS_KEY_RSA;
    case EVP_PKEY_EC:
        switch (ec_curve(key)) {
        case NID_X9_62_prime256v1:
            return FASTTLS_KEY_P256;
        case NID_secp384r1:
            return FASTTLS_KEY_P384;
        }
        break;
    }
    return FASTTLS_KEY_UNSUPPORTED;
}

/* SHA-256 of a SubjectPublicKeyInfo in DER: the key id edges and key server agree on. */
static int spki_sha256(unsigned char *der, int der_len, unsigned char *out)
{
    int ok = der_len > 0 && SHA256(der, (size_t)der_len, out) != NULL;
    OPENSSL_free(der);
    return ok;
}

int fasttls_key_id(EVP_PKEY *key, unsigned char *out)
{
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(key, &der);
    return spki_sha256(der, len, out);
}

int fasttls_cert_key_id(const char *pem, size_t len, unsigned char *out)
{
    STACK_OF(X509) *chain = NULL;
    X509 *leaf = fasttls_read_chain(pem, len, &chain);
    unsigned char *der = NULL;
    int der_len, ok = 0;
    if (leaf != NULL) {
        der_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(leaf), &der);
        ok = spki_sha256(der, der_len, out);
    }
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    return ok;
}

size_t fasttls_key_max_signature(EVP_PKEY *key)
{
    int size = EVP_PKEY_size(key);
    return size > 0 ? (size_t)size : 0;
}

/* What a scheme asks for: the key type, the digest, and the RSA padding (0 for ECDSA). */
struct scheme {
    int key_type;
    const EVP_MD *(*md)(void);
    int padding;
};

static int lookup_scheme(int code, struct scheme *s)
{
    switch (code) {
    case FASTTLS_SCHEME_ECDSA_SECP256R1_SHA256:
        *s = (struct scheme){FASTTLS_KEY_P256, EVP_sha256, 0};
        return 1;
    case FASTTLS_SCHEME_ECDSA_SECP384R1_SHA384:
        *s = (struct scheme){FASTTLS_KEY_P384, EVP_sha384, 0};
        return 1;
    case FASTTLS_SCHEME_RSA_PSS_RSAE_SHA256:
        *s = (struct scheme){FASTTLS_KEY_RSA, EVP_sha256, RSA_PKCS1_PSS_PADDING};
        return 1;
    case FASTTLS_SCHEME_RSA_PSS_RSAE_SHA384:
        *s = (struct scheme){FASTTLS_KEY_RSA, EVP_sha384, RSA_PKCS1_PSS_PADDING};
        return 1;
    case FASTTLS_SCHEME_RSA_PSS_RSAE_SHA512:
        *s = (struct scheme){FASTTLS_KEY_RSA, EVP_sha512, RSA_PKCS1_PSS_PADDING};
        return 1;
    case FASTTLS_SCHEME_RSA_PKCS1_SHA256:
        *s = (struct scheme){FASTTLS_KEY_RSA, EVP_sha256, RSA_PKCS1_PADDING};
        return 1;
    case FASTTLS_SCHEME_RSA_PKCS1_SHA384:
        *s = (struct scheme){FASTTLS_KEY_RSA, EVP_sha384, RSA_PKCS1_PADDING};
        return 1;
    case FASTTLS_SCHEME_RSA_PKCS1_SHA512:
        *s = (struct scheme){FASTTLS_KEY_RSA, EVP_sha512, RSA_PKCS1_PADDING};
        return 1;
    }
    return 0;
}

int fasttls_key_fits_scheme(EVP_PKEY *key, int scheme)
{
    struct scheme s;
    return lookup_scheme(scheme, &s) && s.key_type == fasttls_key_type(key);
}

ptrdiff_t fasttls_key_sign(EVP_PKEY *key, int scheme, const unsigned char *data, size_t len,
                           unsigned char *sig, size_t sig_cap)
{
    struct scheme s;
    EVP_MD_CTX *mctx;
    EVP_PKEY_CTX *pctx = NULL;
    size_t sig_len = sig_cap;
    int ok;
    if (!fasttls_key_fits_scheme(key, scheme))
        return FASTTLS_KEY_BAD_SCHEME;
    lookup_scheme(scheme, &s);
    if (sig_cap < fasttls_key_max_signature(key))
        return FASTTLS_KEY_SHORT_BUFFER;
    if ((mctx = EVP_MD_CTX_new()) == NULL)
        return FASTTLS_ERROR;
    ok = EVP_DigestSignInit(mctx, &pctx, s.md(), NULL, key) > 0;
    if (ok && s.padding != 0)
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, s.padding) > 0;
    if (ok && s.padding == RSA_PKCS1_PSS_PADDING) {
        /* TLS: salt as long as the hash, MGF1 with the same hash (RFC 8446 4.2.3). */
        ok = EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0
             && EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, s.md()) > 0;
    }
    ok = ok && EVP_DigestSign(mctx, sig, &sig_len, data, len) > 0;
    EVP_MD_CTX_free(mctx);
    return ok ? (ptrdiff_t)sig_len : FASTTLS_ERROR;
}
