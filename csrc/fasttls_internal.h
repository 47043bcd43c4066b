/* Private to the engine's C files: what they share with each other. Never read by cffi (which
 * sees fasttls_engine.h only), never part of the Python-visible interface.
 *
 * The engine's files, one concern each:
 *   fasttls_bio.c   the connection BIO, its buffers, feeding input to the SSL object
 *   fasttls_conn.c  connections: creation, handshake, read, write, shutdown, in-flight counting
 *   fasttls_ctx.c   library init, contexts: configuration, locks, callbacks, identities
 *   fasttls_x509.c  certificates and keys: parsing, trust stores, decoding, self-signed
 *   fasttls_io.c    socket I/O inside the engine: recv+decrypt, encrypt+send, handshake
 *   fasttls_hello.c the client-hello callback (handshake pauses), the shared session store
 *   fasttls_seal.c  sealing session blobs (AES-256-GCM) for the shared store
 *   fasttls_tickets.c  session-ticket keys shared by a fleet (nginx's key format)
 *   fasttls_ocsp.c  OCSP stapling: the status callback of both roles, checking responses
 *   fasttls_keyless.c keyless: the provider of opaque keys, the handshake's signing pause
 *   fasttls_sign.c  signing with a key held in this process (the keyless key server) */
#ifndef FASTTLS_INTERNAL_H
#define FASTTLS_INTERNAL_H

#include "fasttls_engine.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

/* OpenSSL 1.1.1 brought TLS 1.3, SSL_read_ex/SSL_write_ex and the keylog callback. */
#if OPENSSL_VERSION_NUMBER < 0x10101000L
#error "fasttls needs OpenSSL 1.1.1 or newer"
#endif

/* ERR_raise is 3.0's spelling; 1.1.1 has ERR_put_error (function code 0: "unknown"). */
#if OPENSSL_VERSION_NUMBER < 0x30000000L
#define ERR_raise(lib, reason) ERR_put_error((lib), 0, (reason), __FILE__, __LINE__)
#endif

/* Shared between the engine's files but not exported from the extension module. */
#if defined(__GNUC__)
#define FASTTLS_INTERNAL __attribute__((visibility("hidden")))
#else
#define FASTTLS_INTERNAL
#endif

/* One record's worth of plaintext: the most a single SSL_read_ex can return. */
#define FASTTLS_RECORD_PLAIN_MAX 16384

/* ---- fasttls_bio.c ---- */

/* The first size of the connection's own buffers, enough for a small message and its record:
 * release_buffers keeps buffers this small, so an idle connection that wakes for small messages
 * does not reallocate them (and their addresses, which the Python side keeps, stay put). */
#define FASTTLS_SMALL_BUFFER 512

FASTTLS_INTERNAL int fasttls_bio_method_init(void);
FASTTLS_INTERNAL BIO *fasttls_bio_new(fasttls_conn *c);
/* Grow *buf to hold at least `need` bytes (never shrinks); 0 if out of memory. */
FASTTLS_INTERNAL int fasttls_reserve(char **buf, size_t *cap, size_t need);
/* Give back a large buffer that holds nothing (len == 0). */
FASTTLS_INTERNAL void fasttls_shrink(char **buf, size_t *cap, size_t len);
FASTTLS_INTERNAL int fasttls_feed(fasttls_conn *c, const unsigned char *data, size_t len);
FASTTLS_INTERNAL int fasttls_keep_rest(fasttls_conn *c);

/* ---- fasttls_io.c ---- */

/* Called by fasttls_conn_release: the duplex mutex, if any. */
FASTTLS_INTERNAL void fasttls_io_release(fasttls_conn *c);

/* ---- fasttls_hello.c ---- */

FASTTLS_INTERNAL int fasttls_hello_init(void);
/* Called by fasttls_conn_release: the sessions held for the application. */
FASTTLS_INTERNAL void fasttls_hello_release(fasttls_conn *c);
/* Called when a handshake completes: lets go of the session handed in for the lookup. */
FASTTLS_INTERNAL void fasttls_hello_handshake_done(fasttls_conn *c);
/* The sni_callback runs between handshake calls (FASTTLS_HELLO_SNI) on this context. */
FASTTLS_INTERNAL int fasttls_hello_enable_sni(SSL_CTX *ctx, int on);

/* ---- fasttls_keyless.c ---- */

/* A connection of a keyless context: SSL_MODE_ASYNC and room for its request (0: no memory). */
FASTTLS_INTERNAL int fasttls_keyless_prepare(fasttls_conn *c);
/* Around SSL_do_handshake: the connection the signature finds; enter refuses (0, error
 * queued) a resume on another thread than the paused job's. */
FASTTLS_INTERNAL int fasttls_keyless_enter(fasttls_conn *c);
FASTTLS_INTERNAL void fasttls_keyless_leave(fasttls_conn *c);
/* A signing request waits for its answer. */
FASTTLS_INTERNAL int fasttls_keyless_waiting(fasttls_conn *c);
/* Called by fasttls_conn_release before SSL_free: ends a paused job. */
FASTTLS_INTERNAL void fasttls_keyless_unwind(fasttls_conn *c);
/* The key is one of the keyless provider's (its private half is elsewhere). */
FASTTLS_INTERNAL int fasttls_key_is_keyless(const EVP_PKEY *key);

/* ---- fasttls_ctx.c ---- */

/* The readers-writer lock guarding a context's configuration (NULL for a context that
 * fasttls_ctx_new did not make). */
FASTTLS_INTERNAL CRYPTO_RWLOCK *fasttls_conf_lock(const SSL_CTX *ctx);
/* Install an identity already read (ownership of all three passes), as fasttls_ctx_use_identity
 * does. The context is keyless (its connections handshake with SSL_MODE_ASYNC) while one of its
 * identities has a keyless key. */
FASTTLS_INTERNAL int fasttls_ctx_install_identity(SSL_CTX *ctx, X509 *cert, STACK_OF(X509) *chain,
                                                  EVP_PKEY *key, int how);
/* Where the context keeps its session-ticket keys (NULL for a context fasttls_ctx_new did not
 * make); the slot holds NULL until keys are first set. */
struct fasttls_tickets;
FASTTLS_INTERNAL struct fasttls_tickets **fasttls_ctx_tickets(const SSL_CTX *ctx);

/* ---- fasttls_tickets.c ---- */

FASTTLS_INTERNAL void fasttls_tickets_free(struct fasttls_tickets *t);
/* The i-th identity's certificate and chain, borrowed (see fasttls_ctx.c); *count is how many
 * there are, -1 if the context keeps none of its own. */
FASTTLS_INTERNAL X509 *fasttls_ctx_identity(SSL_CTX *ctx, int i, STACK_OF(X509) **chain,
                                            int *count);

/* ---- fasttls_ocsp.c ---- */

/* Called by fasttls_init: the ex_data indexes. */
FASTTLS_INTERNAL int fasttls_ocsp_init(void);

/* ---- fasttls_x509.c ---- */

/* The leaf first, then its chain, from one PEM buffer; NULL (and no chain) on error. */
FASTTLS_INTERNAL X509 *fasttls_read_chain(const char *pem, size_t len, STACK_OF(X509) **chain);
/* A private key from PEM, decrypted with the password if it is encrypted. */
FASTTLS_INTERNAL EVP_PKEY *fasttls_read_key(const char *pem, size_t len, const char *password,
                                            size_t password_len);

#endif
