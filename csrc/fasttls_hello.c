/* The server's client-hello callback: the one place where a handshake stops for the
 * application before it goes on.
 *
 * Some server work needs the application and may take a while: a session looked up in a store
 * shared by a fleet (Redis, memcached), the sni_callback. None of it may run inside
 * SSL_do_handshake: a keyless handshake runs on a small fibre stack where Python code must
 * never run, and blocking there would block the thread or the event loop. So the client-hello
 * callback, C only, records in c->hello_wants what the application must do and returns
 * SSL_CLIENT_HELLO_RETRY: SSL_do_handshake returns, the engine reports FASTTLS_WANT_HELLO, the
 * application does the work between two handshake calls (TLS.pause), hands the answer in,
 * and calls the handshake again; OpenSSL then calls this callback again, which finds the work
 * done (c->hello_done) and lets the handshake continue.
 *
 * Adding another kind of work is a bit in FASTTLS_HELLO_* (fasttls_engine.h), a line in
 * client_hello_callback, and the call that hands its answer in (which clears the bit).
 *
 * The session store: the callback takes the key the client offers, OpenSSL's session cache is
 * turned to "external only" (no internal cache, so every resumption is the store's, whichever
 * process made the session), and its get callback returns the session handed in; its new
 * callback serialises every new session onto the connection for the application to store
 * after the handshake step. Stateless tickets are off (SSL_OP_NO_TICKET): TLS 1.2 resumes by
 * session ID, and OpenSSL's TLS 1.3 tickets are then stateful, their identity the session ID.
 * No remove callback: with no internal cache OpenSSL's removals (a connection freed without
 * close_notify included) never reach the shared store; sessions leave it by the store's TTL,
 * which is the session's timeout, and a TLS 1.2 session after a fatal alert, deleted by the
 * Python side (fasttls/store/_saver.py, evict) outside the handshake. */
#include "fasttls_internal.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/tls1.h>

/* Sessions kept per connection for the application: OpenSSL makes one per TLS 1.2 handshake and
 * one per TLS 1.3 ticket (num_tickets, 2 by default); more than this are not stored. */
#define NEW_SESSIONS_MAX 8

struct fasttls_new_session {
    struct fasttls_new_session *next;
    unsigned char id[SSL_MAX_SSL_SESSION_ID_LENGTH];
    size_t id_len;
    unsigned char *der;
    size_t der_len;
    long timeout;
};

/* Per context: which FASTTLS_HELLO_* work its connections need, in the pointer itself (an
 * ex_data slot, no allocation). Written under the context's configuration write lock, read by
 * handshake steps under its read lock. */
static int hello_index = -1;

/* Called once by fasttls_init, at import (cffi calls release the GIL: a lazy initialisation
 * could race). */
int fasttls_hello_init(void)
{
    if (hello_index < 0)
        hello_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    return hello_index >= 0;
}

static int hello_index_ready(void)
{
    return hello_index >= 0;
}

static unsigned int hello_enabled(const SSL_CTX *ctx)
{
    return hello_index < 0 ? 0 : (unsigned int)(uintptr_t)SSL_CTX_get_ex_data(ctx, hello_index);
}

/* ---- reading the ClientHello ---- */

static unsigned int u16(const unsigned char *p)
{
    return (unsigned int)p[0] << 8 | p[1];
}

/* The client offers TLS 1.3 (supported_versions) and this server may negotiate it. */
static int tls13_negotiable(SSL *ssl)
{
    const unsigned char *ext;
    size_t len, i;
    long max = SSL_get_max_proto_version(ssl);
    if (max != 0 && max < TLS1_3_VERSION)
        return 0;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &ext, &len) || len < 1)
        return 0;
    if ((size_t)ext[0] + 1 > len)
        return 0;
    for (i = 1; i + 1 < (size_t)ext[0] + 1; i += 2)
        if (u16(ext + i) == TLS1_3_VERSION)
            return 1;
    return 0;
}

/* The first PSK identity that can name a stateful ticket (OpenSSL's are session IDs, of exactly
 * SSL_MAX_SSL_SESSION_ID_LENGTH bytes; it ignores others). */
static size_t psk_identity(SSL *ssl, unsigned char *out)
{
    const unsigned char *ext;
    size_t len, ids_len, i, id_len;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_psk, &ext, &len) || len < 2)
        return 0;
    ids_len = u16(ext);
    if (ids_len + 2 > len)
        return 0;
    for (i = 2; i + 2 <= ids_len + 2; i += 2 + id_len + 4) {
        id_len = u16(ext + i);
        if (i + 2 + id_len + 4 > ids_len + 2)
            return 0;
        if (id_len == SSL_MAX_SSL_SESSION_ID_LENGTH) {
            memcpy(out, ext + i + 2, id_len);
            return id_len;
        }
    }
    return 0;
}

/* The key to look up, or 0 if there is none. TLS 1.3 clients send a random legacy session ID
 * (middlebox compatibility): never looked up when TLS 1.3 can be negotiated. */
static size_t session_key(SSL *ssl, unsigned char *out)
{
    const unsigned char *id;
    size_t len;
    if (tls13_negotiable(ssl))
        return psk_identity(ssl, out);
    len = SSL_client_hello_get0_session_id(ssl, &id);
    if (len == 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return 0;
    memcpy(out, id, len);
    return len;
}

/* The host_name of the server_name extension (RFC 6066 3), "" if none or malformed: OpenSSL
 * has not parsed the extensions yet when this callback runs. */
static void server_name(SSL *ssl, char *out, size_t size)
{
    const unsigned char *ext;
    size_t len, list_len, name_len;
    out[0] = '\0';
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &len) || len < 5)
        return;
    list_len = u16(ext);
    if (list_len + 2 != len || ext[2] != TLSEXT_NAMETYPE_host_name)
        return;
    name_len = u16(ext + 3);
    if (name_len == 0 || name_len + 5 > len || name_len >= size ||
        memchr(ext + 5, 0, name_len) != NULL)
        return;
    memcpy(out, ext + 5, name_len);
    out[name_len] = '\0';
}

/* ---- the callback ---- */

static int client_hello_callback(SSL *ssl, int *alert, void *arg)
{
    fasttls_conn *c = SSL_get_app_data(ssl);
    unsigned int todo;
    (void)arg;
    if (c == NULL)
        return SSL_CLIENT_HELLO_SUCCESS;
    if (c->hello_wants)
        return SSL_CLIENT_HELLO_RETRY; /* called again before the application answered */
    todo = hello_enabled(SSL_get_SSL_CTX(ssl)) & ~c->hello_done;
    if (todo & FASTTLS_HELLO_SESSION) {
        c->hello_done |= FASTTLS_HELLO_SESSION;
        c->session_key_len = session_key(ssl, c->session_key);
        if (c->session_key_len)
            c->hello_wants |= FASTTLS_HELLO_SESSION;
    }
    if (c->hello_alert) {
        *alert = c->hello_alert; /* the sni_callback refused */
        return SSL_CLIENT_HELLO_ERROR;
    }
    if (todo & FASTTLS_HELLO_SNI) {
        c->hello_done |= FASTTLS_HELLO_SNI;
        server_name(ssl, c->hello_name, sizeof(c->hello_name));
        c->hello_wants |= FASTTLS_HELLO_SNI;
    }
    return c->hello_wants ? SSL_CLIENT_HELLO_RETRY : SSL_CLIENT_HELLO_SUCCESS;
}

static void set_enabled(SSL_CTX *ctx, unsigned int bit, int on)
{
    unsigned int flags = hello_enabled(ctx);
    flags = on ? flags | bit : flags & ~bit;
    SSL_CTX_set_ex_data(ctx, hello_index, (void *)(uintptr_t)flags);
    SSL_CTX_set_client_hello_cb(ctx, flags ? client_hello_callback : NULL, NULL);
}

int fasttls_hello_enable_sni(SSL_CTX *ctx, int on)
{
    if (!hello_index_ready())
        return 0;
    set_enabled(ctx, FASTTLS_HELLO_SNI, on);
    return 1;
}

void fasttls_conn_sni_done(fasttls_conn *c, int alert)
{
    c->hello_wants &= ~(unsigned int)FASTTLS_HELLO_SNI;
    c->hello_alert = alert;
}

/* ---- the session store ---- */

static SSL_SESSION *get_session(SSL *ssl, const unsigned char *id, int len, int *copy)
{
    fasttls_conn *c = SSL_get_app_data(ssl);
    const unsigned char *found_id;
    unsigned int found_len;
    *copy = 1; /* OpenSSL takes a reference of its own; ours goes with the connection */
    if (c == NULL || c->found_session == NULL || len < 0)
        return NULL;
    found_id = SSL_SESSION_get_id(c->found_session, &found_len);
    if (found_len != (unsigned int)len || memcmp(found_id, id, found_len) != 0)
        return NULL;
    return c->found_session;
}

static int new_session(SSL *ssl, SSL_SESSION *session)
{
    fasttls_conn *c = SSL_get_app_data(ssl);
    struct fasttls_new_session *n, **tail;
    const unsigned char *id;
    unsigned int id_len;
    unsigned char *p;
    int count = 0, der_len;
    if (c == NULL)
        return 0;
    for (tail = &c->new_sessions; *tail != NULL; tail = &(*tail)->next)
        count++;
    id = SSL_SESSION_get_id(session, &id_len);
    der_len = i2d_SSL_SESSION(session, NULL);
    if (count >= NEW_SESSIONS_MAX || id_len == 0 || id_len > SSL_MAX_SSL_SESSION_ID_LENGTH ||
        der_len <= 0 || (n = calloc(1, sizeof(*n))) == NULL)
        return 0;
    if ((n->der = malloc((size_t)der_len)) == NULL) {
        free(n);
        return 0;
    }
    p = n->der;
    n->der_len = (size_t)i2d_SSL_SESSION(session, &p);
    memcpy(n->id, id, id_len);
    n->id_len = id_len;
    n->timeout = SSL_SESSION_get_timeout(session);
    *tail = n;
    return 0; /* serialised: OpenSSL keeps its reference */
}

int fasttls_ctx_enable_session_store(SSL_CTX *ctx, int on)
{
    if (!hello_index_ready())
        return 0;
    set_enabled(ctx, FASTTLS_HELLO_SESSION, on);
    if (on) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_sess_set_get_cb(ctx, get_session);
        SSL_CTX_sess_set_new_cb(ctx, new_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_sess_set_get_cb(ctx, NULL);
        SSL_CTX_sess_set_new_cb(ctx, NULL);
    }
    return 1;
}

int fasttls_conn_hand_in_session(fasttls_conn *c, const unsigned char *der, size_t len)
{
    SSL_SESSION *session = NULL;
    const unsigned char *id;
    unsigned int id_len;
    int ok = 0;
    c->hello_wants &= ~(unsigned int)FASTTLS_HELLO_SESSION;
    if (der != NULL && len > 0 && len <= (size_t)LONG_MAX) {
        session = d2i_SSL_SESSION(NULL, &der, (long)len);
        if (session != NULL) {
            id = SSL_SESSION_get_id(session, &id_len);
            ok = id_len == c->session_key_len && memcmp(id, c->session_key, id_len) == 0;
        }
        ERR_clear_error(); /* a blob that does not decode is "not found", not a failure */
    }
    if (!ok) {
        SSL_SESSION_free(session);
        return der == NULL || len == 0;
    }
    SSL_SESSION_free(c->found_session);
    c->found_session = session;
    return 1;
}

int fasttls_conn_new_session(fasttls_conn *c, int i, const unsigned char **id, size_t *id_len,
                             const unsigned char **der, size_t *der_len, long *timeout)
{
    struct fasttls_new_session *n = c->new_sessions;
    while (n != NULL && i-- > 0)
        n = n->next;
    if (n == NULL)
        return 0;
    *id = n->id;
    *id_len = n->id_len;
    *der = n->der;
    *der_len = n->der_len;
    *timeout = n->timeout;
    return 1;
}

void fasttls_conn_clear_new_sessions(fasttls_conn *c)
{
    struct fasttls_new_session *n;
    while ((n = c->new_sessions) != NULL) {
        c->new_sessions = n->next;
        OPENSSL_cleanse(n->der, n->der_len); /* it holds the session's master secret */
        free(n->der);
        free(n);
    }
}

/* The handshake is done: the session handed in has served (OpenSSL holds a reference of its own,
 * or, resuming TLS 1.3, a copy), so it is not kept for the connection's life. Kept until now: a
 * HelloRetryRequest's second ClientHello looks it up again. */
void fasttls_hello_handshake_done(fasttls_conn *c)
{
    SSL_SESSION_free(c->found_session);
    c->found_session = NULL;
}

void fasttls_hello_release(fasttls_conn *c)
{
    fasttls_conn_clear_new_sessions(c);
    SSL_SESSION_free(c->found_session);
    c->found_session = NULL;
    c->hello_wants = 0;
}
