/* Session-ticket keys shared by a fleet (RFC 5077 tickets, TLS 1.2, and TLS 1.3 stateless
 * tickets): the keys live in the context, and OpenSSL's ticket-key callback picks one per
 * ticket in C, so no Python code runs per handshake.
 *
 * Key format: nginx's `ssl_session_ticket_key` files (src/event/ngx_event_openssl.c,
 * ngx_ssl_session_ticket_keys), so one key file serves nginx and fasttls servers alike:
 *   80 bytes: name[16] | HMAC-SHA256 secret[32] | AES-256-CBC key[32]
 *   48 bytes: name[16] | AES-128-CBC key[16]   | HMAC-SHA256 secret[16]
 * (the 48-byte layout puts the AES key before the HMAC secret; nginx reads it that way.)
 *
 * The first key is the current one: it encrypts every new ticket. The others only decrypt:
 * a ticket under one of them is accepted and renewed (the callback returns 2, and OpenSSL sends
 * a fresh ticket under the current key); a ticket under a name not in the list means a full
 * handshake, never an error.
 *
 * TLS 1.3: OpenSSL 3.0 sends a NewSessionTicket after a resumed TLS 1.3 handshake only when the
 * callback asked for renewal (ssl/statem/statem_srvr.c: a resumed handshake without
 * ext.ticket_expected ends at the server's Finished). A TLS 1.3 client should use each ticket
 * once (RFC 8446 C.4), so without renewal it runs out after num_tickets resumptions. So under
 * TLS 1.3 every ticket that decrypts is renewed, whatever its key, as nginx does.
 *
 * Locking: the keys are replaced while handshakes run in other threads. The callback reads
 * them under the key set's own read lock (and, being called inside a handshake step, under the
 * context's configuration read lock as well, see fasttls_conn.c); a replacement takes the write
 * lock, swaps the arrays and wipes the old keys after letting go of it. */
#include "fasttls_internal.h"

#include <openssl/rand.h>
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/core_names.h>
#include <openssl/params.h>
#else
#include <openssl/hmac.h>
#endif

#include <stdlib.h>
#include <string.h>

#define NAME_LEN 16

struct ticket_key {
    unsigned char name[NAME_LEN];
    unsigned char hmac[32];
    unsigned char aes[32];
    size_t hmac_len; /* 32 (80-byte keys) or 16 (48-byte keys) */
    int aes256;      /* AES-256-CBC, else AES-128-CBC */
};

struct fasttls_tickets {
    CRYPTO_RWLOCK *lock;
    struct ticket_key *keys; /* keys[0] is current; NULL when n == 0 */
    size_t n;
    /* What the callback did, for session_ticket_stats() (relaxed atomic counters): tickets
     * issued; tickets decrypted under the current key, under a previous one (renewed), and
     * under a name not in the list (full handshake). A ticket that decrypts may still be
     * refused by OpenSSL afterwards (expired, another cipher suite). */
    unsigned long issued, current, previous, unknown;
};

static void count(unsigned long *counter)
{
#if defined(__GNUC__)
    __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
#else
    ++*counter; /* statistics only: a lost increment is harmless */
#endif
}

static unsigned long read_count(unsigned long *counter)
{
#if defined(__GNUC__)
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
#else
    return *counter;
#endif
}

static void wipe_keys(struct ticket_key *keys, size_t n)
{
    if (keys != NULL) {
        OPENSSL_cleanse(keys, n * sizeof(*keys));
        free(keys);
    }
}

void fasttls_tickets_free(struct fasttls_tickets *t)
{
    if (t == NULL)
        return;
    wipe_keys(t->keys, t->n);
    CRYPTO_THREAD_lock_free(t->lock);
    free(t);
}

/* The key set of the context whose callback runs: OpenSSL calls the callback of the SSL's
 * session context (the one the connection was made from), even after an SNI switch, so that is
 * the context whose keys apply (c->first_ctx), not SSL_get_SSL_CTX's current one. */
static struct fasttls_tickets *tickets_of(SSL *ssl)
{
    fasttls_conn *c = SSL_get_app_data(ssl);
    SSL_CTX *ctx = c != NULL && c->first_ctx != NULL ? c->first_ctx : SSL_get_SSL_CTX(ssl);
    struct fasttls_tickets **slot = fasttls_ctx_tickets(ctx);
    return slot != NULL ? *slot : NULL;
}

static const struct ticket_key *find_key(const struct fasttls_tickets *t,
                                         const unsigned char *name, size_t *index)
{
    size_t i;
    for (i = 0; i < t->n; i++) {
        /* Key names are not secret (they travel in clear at the start of every ticket). */
        if (memcmp(t->keys[i].name, name, NAME_LEN) == 0) {
            *index = i;
            return &t->keys[i];
        }
    }
    return NULL;
}

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
typedef EVP_MAC_CTX ticket_mac_ctx;

static int init_mac(EVP_MAC_CTX *hctx, const struct ticket_key *key)
{
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key->hmac,
                                                  key->hmac_len);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params);
}
#else
typedef HMAC_CTX ticket_mac_ctx;

static int init_mac(HMAC_CTX *hctx, const struct ticket_key *key)
{
    return HMAC_Init_ex(hctx, key->hmac, (int)key->hmac_len, EVP_sha256(), NULL);
}
#endif

static const EVP_CIPHER *cipher_of(const struct ticket_key *key)
{
    return key->aes256 ? EVP_aes_256_cbc() : EVP_aes_128_cbc();
}

/* OpenSSL's contract: encrypting (enc == 1), fill name and iv and set up both contexts: 1 done,
 * 0 no ticket, < 0 error. Decrypting: find the key named `name`: 0 unknown (full handshake),
 * 1 done, 2 done and send a new ticket, < 0 error. */
static int ticket_key_callback(SSL *ssl, unsigned char *name, unsigned char *iv,
                               EVP_CIPHER_CTX *cctx, ticket_mac_ctx *hctx, int enc)
{
    struct fasttls_tickets *t = tickets_of(ssl);
    const struct ticket_key *key;
    size_t index = 0;
    int result = 0;
    if (t == NULL || !CRYPTO_THREAD_read_lock(t->lock))
        return enc ? -1 : 0;
    if (enc) {
        if (t->n == 0) {
            result = 0; /* keys removed meanwhile: no ticket this time */
        } else {
            key = &t->keys[0];
            memcpy(name, key->name, NAME_LEN);
            result = RAND_bytes(iv, EVP_CIPHER_iv_length(cipher_of(key))) > 0 &&
                             EVP_EncryptInit_ex(cctx, cipher_of(key), NULL, key->aes, iv) &&
                             init_mac(hctx, key)
                         ? 1
                         : -1;
            if (result == 1)
                count(&t->issued);
        }
    } else if ((key = find_key(t, name, &index)) == NULL) {
        count(&t->unknown);
        result = 0;
    } else if (!EVP_DecryptInit_ex(cctx, cipher_of(key), NULL, key->aes, iv) ||
               !init_mac(hctx, key)) {
        result = 0; /* treated as undecryptable: a full handshake */
    } else if (index != 0 || SSL_version(ssl) == TLS1_3_VERSION) {
        count(index != 0 ? &t->previous : &t->current);
        result = 2;
    } else {
        count(&t->current);
        result = 1;
    }
    CRYPTO_THREAD_unlock(t->lock);
    return result;
}

static int install_callback(SSL_CTX *ctx, int on)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    return SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on ? ticket_key_callback : NULL);
#else
    return (int)SSL_CTX_set_tlsext_ticket_key_cb(ctx, on ? ticket_key_callback : NULL);
#endif
}

int fasttls_ctx_set_ticket_keys(SSL_CTX *ctx, const unsigned char *data, const size_t *lens,
                                size_t n)
{
    struct fasttls_tickets **slot = fasttls_ctx_tickets(ctx);
    struct fasttls_tickets *t;
    struct ticket_key *keys = NULL, *old;
    size_t i, old_n, offset = 0;
    ERR_clear_error();
    if (slot == NULL) {
        ERR_raise(ERR_LIB_SSL, ERR_R_PASSED_INVALID_ARGUMENT);
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (lens[i] != FASTTLS_TICKET_KEY_AES256 && lens[i] != FASTTLS_TICKET_KEY_AES128) {
            ERR_raise(ERR_LIB_SSL, ERR_R_PASSED_INVALID_ARGUMENT);
            return -1;
        }
    }
    if (*slot == NULL) {
        if ((t = calloc(1, sizeof(*t))) == NULL || (t->lock = CRYPTO_THREAD_lock_new()) == NULL) {
            free(t);
            ERR_raise(ERR_LIB_SSL, ERR_R_MALLOC_FAILURE);
            return 0;
        }
        *slot = t;
    }
    t = *slot;
    if (n > 0 && (keys = calloc(n, sizeof(*keys))) == NULL) {
        ERR_raise(ERR_LIB_SSL, ERR_R_MALLOC_FAILURE);
        return 0;
    }
    for (i = 0; i < n; offset += lens[i], i++) {
        const unsigned char *k = data + offset;
        memcpy(keys[i].name, k, NAME_LEN);
        if (lens[i] == FASTTLS_TICKET_KEY_AES256) {
            memcpy(keys[i].hmac, k + 16, 32);
            memcpy(keys[i].aes, k + 48, 32);
            keys[i].hmac_len = 32;
            keys[i].aes256 = 1;
        } else {
            memcpy(keys[i].aes, k + 16, 16);
            memcpy(keys[i].hmac, k + 32, 16);
            keys[i].hmac_len = 16;
            keys[i].aes256 = 0;
        }
    }
    if (!CRYPTO_THREAD_write_lock(t->lock)) {
        wipe_keys(keys, n);
        return 0;
    }
    old = t->keys, old_n = t->n;
    t->keys = keys, t->n = n;
    CRYPTO_THREAD_unlock(t->lock);
    wipe_keys(old, old_n);
    /* No keys: back to OpenSSL's own per-context random key (tickets this process alone can
     * read), as before any call. */
    return install_callback(ctx, n > 0) ? 1 : 0;
}

int fasttls_ctx_ticket_stats(SSL_CTX *ctx, unsigned long *out)
{
    struct fasttls_tickets **slot = fasttls_ctx_tickets(ctx);
    struct fasttls_tickets *t = slot != NULL ? *slot : NULL;
    int n = 0;
    out[0] = out[1] = out[2] = out[3] = 0;
    if (t == NULL || !CRYPTO_THREAD_read_lock(t->lock))
        return 0;
    n = (int)t->n;
    CRYPTO_THREAD_unlock(t->lock);
    out[0] = read_count(&t->issued);
    out[1] = read_count(&t->current);
    out[2] = read_count(&t->previous);
    out[3] = read_count(&t->unknown);
    return n;
}
