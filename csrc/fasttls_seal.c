/* Sealing session blobs for a shared store: AES-256-GCM under a fleet key, with EVP.
 *
 * A serialised session holds its master secret: whoever reads the store can impersonate the
 * server to that client, or decrypt traffic recorded from it. Sealed, a blob is useless without
 * the fleet key, and cannot be moved under another store key or altered unnoticed.
 *
 * Layout: header (the caller's: format version, key id) | nonce (12 random bytes) | ciphertext
 * | tag (16). Authenticated: the header, the nonce and the caller's associated data (the store
 * key). Random nonces: a key should seal well under 2^32 blobs (rotate keys far sooner).
 *
 * Keys live in memory of their own, wiped when freed; the Python side never holds them after
 * handing them over (see fasttls/store/_sealed.py). */
#include "fasttls_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16

struct fasttls_seal_key {
    unsigned char key[KEY_LEN];
};

fasttls_seal_key *fasttls_seal_key_new(const unsigned char *secret, size_t len)
{
    fasttls_seal_key *k;
    if (len != KEY_LEN || (k = malloc(sizeof(*k))) == NULL)
        return NULL;
    memcpy(k->key, secret, KEY_LEN);
    return k;
}

void fasttls_seal_key_free(fasttls_seal_key *k)
{
    if (k == NULL)
        return;
    OPENSSL_cleanse(k->key, sizeof(k->key));
    free(k);
}

size_t fasttls_sealed_size(size_t header_len, size_t plain_len)
{
    return header_len + NONCE_LEN + plain_len + TAG_LEN;
}

/* One AES-256-GCM pass: encrypt (1) or decrypt (0) `in` to `out`; the tag is written, or
 * checked. 1 done, 0 failed (for decryption: not authentic). */
static int gcm(int encrypt, const fasttls_seal_key *k, const unsigned char *nonce,
               const unsigned char *aad1, size_t aad1_len, const unsigned char *aad2,
               size_t aad2_len, const unsigned char *in, size_t len, unsigned char *out,
               unsigned char *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = 0, n;
    if (ctx == NULL || len > INT_MAX || aad1_len > INT_MAX || aad2_len > INT_MAX)
        goto done;
    if (!EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, k->key, nonce, encrypt))
        goto done;
    if ((aad1_len && !EVP_CipherUpdate(ctx, NULL, &n, aad1, (int)aad1_len)) ||
        (aad2_len && !EVP_CipherUpdate(ctx, NULL, &n, aad2, (int)aad2_len)))
        goto done;
    if (len && !EVP_CipherUpdate(ctx, out, &n, in, (int)len))
        goto done;
    if (!encrypt && !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag))
        goto done;
    if (EVP_CipherFinal_ex(ctx, out + len, &n) != 1)
        goto done;
    if (encrypt && !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag))
        goto done;
    ok = 1;
done:
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}

/* Writes fasttls_sealed_size(header_len, len) bytes to out; returns that count, or -1. */
ptrdiff_t fasttls_seal(const fasttls_seal_key *k, const unsigned char *header, size_t header_len,
                       const unsigned char *aad, size_t aad_len, const unsigned char *plain,
                       size_t len, unsigned char *out)
{
    unsigned char *nonce = out + header_len;
    ptrdiff_t result = -1;
    ERR_clear_error();
    memcpy(out, header, header_len);
    if (RAND_bytes(nonce, NONCE_LEN) == 1 &&
        gcm(1, k, nonce, out, header_len + NONCE_LEN, aad, aad_len, plain, len,
            nonce + NONCE_LEN, nonce + NONCE_LEN + len))
        result = (ptrdiff_t)fasttls_sealed_size(header_len, len);
    ERR_clear_error();
    return result;
}

/* The plaintext of a sealed blob whose first header_len bytes are the header, into out (room
 * for len - header_len - 28 bytes): its length, or -1 if the blob is not authentic under this
 * key (or too short). Nothing unauthenticated is left in out. */
ptrdiff_t fasttls_unseal(const fasttls_seal_key *k, const unsigned char *sealed, size_t len,
                         size_t header_len, const unsigned char *aad, size_t aad_len,
                         unsigned char *out)
{
    const unsigned char *nonce = sealed + header_len;
    size_t plain_len;
    unsigned char tag[TAG_LEN];
    int ok;
    if (len < header_len + NONCE_LEN + TAG_LEN)
        return -1;
    plain_len = len - header_len - NONCE_LEN - TAG_LEN;
    memcpy(tag, sealed + len - TAG_LEN, TAG_LEN);
    ERR_clear_error();
    ok = gcm(0, k, nonce, sealed, header_len + NONCE_LEN, aad, aad_len, nonce + NONCE_LEN,
             plain_len, out, tag);
    ERR_clear_error();
    if (!ok) {
        OPENSSL_cleanse(out, plain_len);
        return -1;
    }
    return (ptrdiff_t)plain_len;
}
