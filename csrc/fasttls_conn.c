/* Connections: creation, the handshake, reading, writing and shutdown, each one call.
 *
 * Every entry point that runs OpenSSL is counted in flight, for interpreter exit (see
 * fasttls_quiesce). */
#include "fasttls_internal.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/x509v3.h>

/* Interpreter exit: OpenSSL's own atexit handler tears the library down while daemon threads
 * may still be inside it. fasttls_quiesce, run by Python's atexit in the main thread before
 * that, waits for the operations in flight to leave; from then on, other threads entering
 * fasttls are parked (the process is about to end them, as CPython parks daemon threads that
 * want the GIL back), and only the exiting thread itself may still use it.
 *
 * In flight without atomics: every engine call is one thread on one connection (the Python
 * side never runs two calls on one connection at once), so each connection counts its own
 * calls in `busy` with plain stores, and checks `shutting_down` with a plain load: no locked
 * instruction, no shared cache line on the fast path. That store-then-load is the fast side of
 * an asymmetric Dekker pattern; fasttls_quiesce, the slow side, sets `shutting_down` and then
 * has every running thread execute a full memory barrier (membarrier(2)) before it reads the
 * counts: a thread that read `shutting_down` as 0 before that barrier has its `busy` visible
 * after it, and a thread that reads it after the barrier sees 1. The live connections are a
 * list under a mutex, touched only when a connection is made or released. */
static int shutting_down;
static pthread_t exiting_thread;
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static fasttls_conn *live_head;

static void link_live(fasttls_conn *c)
{
    pthread_mutex_lock(&live_lock);
    if (!c->live) {
        c->live_prev = NULL;
        c->live_next = live_head;
        if (live_head != NULL)
            live_head->live_prev = c;
        live_head = c;
        c->live = 1;
    }
    pthread_mutex_unlock(&live_lock);
}

static void unlink_live(fasttls_conn *c)
{
    pthread_mutex_lock(&live_lock);
    if (c->live) {
        if (c->live_prev != NULL)
            c->live_prev->live_next = c->live_next;
        else
            live_head = c->live_next;
        if (c->live_next != NULL)
            c->live_next->live_prev = c->live_prev;
        c->live_prev = c->live_next = NULL;
        c->live = 0;
    }
    pthread_mutex_unlock(&live_lock);
}

static void leave(fasttls_conn *c)
{
    /* Release: what the call did to OpenSSL's state is done before the count says so. */
    __atomic_store_n(&c->busy, c->busy - 1, __ATOMIC_RELEASE);
}

static void park(fasttls_conn *c)
{
    struct timespec forever = {3600, 0};
    leave(c);
    for (;;)
        nanosleep(&forever, NULL);
}

static void enter(fasttls_conn *c)
{
    __atomic_store_n(&c->busy, c->busy + 1, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST); /* the compiler keeps the order; see above */
    if (__atomic_load_n(&shutting_down, __ATOMIC_RELAXED)) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE); /* exiting_thread was written before */
        if (!pthread_equal(pthread_self(), exiting_thread))
            park(c);
    }
}

/* Every running thread of the process executes a full memory barrier before this returns. */
static void barrier_everywhere(void)
{
#if defined(__linux__) && defined(SYS_membarrier)
    if (syscall(SYS_membarrier, 1 /* MEMBARRIER_CMD_GLOBAL */, 0, 0) == 0)
        return;
#endif
    {
        /* No membarrier (or refused): a store buffer drains in nanoseconds; 20 ms is ample. */
        struct timespec pause = {0, 20000000};
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        nanosleep(&pause, NULL);
    }
}

static int any_busy(void)
{
    fasttls_conn *c;
    int busy = 0;
    pthread_mutex_lock(&live_lock);
    for (c = live_head; c != NULL && !busy; c = c->live_next)
        busy = __atomic_load_n(&c->busy, __ATOMIC_ACQUIRE) > 0;
    pthread_mutex_unlock(&live_lock);
    return busy;
}

int fasttls_quiesce(int timeout_ms)
{
    struct timespec pause = {0, 1000000};
    exiting_thread = pthread_self();
    __atomic_store_n(&shutting_down, 1, __ATOMIC_SEQ_CST);
    barrier_everywhere();
    while (any_busy() && timeout_ms-- > 0)
        nanosleep(&pause, NULL);
    return !any_busy();
}

/* ---- the error queue ----
 *
 * Why an operation stopped comes from SSL_get_error, which looks at this thread's error queue
 * first: an error left there by anyone turns a want-read or a close_notify into a fatal error of
 * whatever connection this thread touches next. So every path here that leaves errors on the
 * queue empties it before returning (fail() captures the error into the connection first), and
 * every entry point starts from an empty queue:
 *   - the handshake, shutdown, connection setup and the rarer calls clear it outright
 *     (ERR_clear_error, ~160 ns: nothing next to a handshake step);
 *   - fasttls_read checks it (ERR_peek_error, ~25 ns) and clears it only if something is there.
 *     fasttls's own paths keep it empty, but the same thread also runs the stdlib's _ssl,
 *     pyca/cryptography or any other OpenSSL user, which fasttls cannot police, and a read is
 *     exactly where a stale error would turn "no complete record yet" into a failure;
 *   - fasttls_write does not check it on the established-connection path: there our BIO never
 *     asks to retry, so SSL_write_ex fails only for a fatal error, which puts its own error on
 *     the queue, the newest one, which is what fail() reports (and fail() empties the queue).
 *     While the connection can still be in a handshake (lock_io), a write may want to read, and
 *     it checks like a read. */

static void clear_stale_errors(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

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

/* ---- configuration locks ----
 *
 * OpenSSL reads a context's configuration during a handshake without locking it (cipher lists,
 * the trust store, the certificate chain store), and frees it when Python replaces it
 * (set_ciphers, load_verify_locations, set_cert) in another thread. So each context has a
 * readers-writer lock (fasttls_ctx.c): Python holds it for writing around every change, and a
 * connection holds it for reading around every OpenSSL call that may read configuration.
 *
 * Which contexts: the one the SSL uses now and the one it was made from (OpenSSL keeps using
 * that one for the session cache and tickets after a switch). And server-side SNI switches the
 * SSL to another context in the middle of SSL_do_handshake: fasttls_conn_switch_ctx takes the
 * chosen context's read lock then and it stays held, with the others, until the step ends; so
 * the rest of the step, and every later step, reads the chosen context under its lock. Each
 * held context also holds a reference, so a context switched away from mid-step cannot be freed
 * (and its lock with it) before the step lets go of it.
 *
 * Reads and writes lock only while they can do more than move records (lock_io): before the
 * handshake is complete, and when post-handshake authentication is on (a client answering a
 * CertificateRequest builds its chain from the context's store; a server verifies the answer
 * against it). After a plain handshake the only post-handshake messages are NewSessionTicket
 * (OpenSSL's session cache has its own lock) and KeyUpdate (no configuration), so the fast path
 * takes no lock at all.
 *
 * Nested read locks: a step may hold two contexts and take a third. OpenSSL's locks are
 * pthread readers-writer locks with the default attributes, which on glibc let a reader in while
 * a writer waits, so readers taking several locks in different orders cannot deadlock each
 * other; a writer never holds two. A context already held is never locked twice. */

static int hold(fasttls_conn *c, SSL_CTX *ctx)
{
    CRYPTO_RWLOCK *lock;
    int i;
    for (i = 0; i < c->n_locked; i++)
        if (c->locked[i] == ctx)
            return 1;
    if (c->n_locked == (int)(sizeof(c->locked) / sizeof(c->locked[0])))
        return 0;
    lock = fasttls_conf_lock(ctx);
    if (lock != NULL && !CRYPTO_THREAD_read_lock(lock))
        return 0;
    SSL_CTX_up_ref(ctx);
    c->locked[c->n_locked++] = ctx;
    return 1;
}

static void release_step(fasttls_conn *c)
{
    while (c->n_locked > 0) {
        SSL_CTX *ctx = c->locked[--c->n_locked];
        CRYPTO_RWLOCK *lock = fasttls_conf_lock(ctx);
        if (lock != NULL)
            CRYPTO_THREAD_unlock(lock);
        SSL_CTX_free(ctx);
    }
    c->in_step = 0;
}

static int begin_step(fasttls_conn *c)
{
    c->in_step = 1;
    if (hold(c, SSL_get_SSL_CTX(c->ssl)) && hold(c, c->first_ctx))
        return 1;
    release_step(c);
    return 0;
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

const char *fasttls_conn_server_name(fasttls_conn *c)
{
    if (c->ssl == NULL)
        return NULL;
    return SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
}

/* Serve this connection from another context (its certificate and key). Inside a handshake
 * step (the SNI callback) the chosen context stays locked until the step ends (see
 * "configuration locks"); outside one, only for the switch. */
int fasttls_conn_switch_ctx(fasttls_conn *c, SSL_CTX *ctx)
{
    CRYPTO_RWLOCK *lock;
    int ok = 0;
    if (c->ssl == NULL)
        return 0;
    /* A server switched to a keyless context (by its sni_callback, which runs between handshake
     * calls) runs the rest of its handshake in a job, like one made from it. */
    if (SSL_is_server(c->ssl) && fasttls_ctx_is_keyless(ctx) && !fasttls_keyless_prepare(c))
        return 0;
    if (c->in_step) {
        ok = hold(c, ctx) && SSL_set_SSL_CTX(c->ssl, ctx) == ctx;
    } else {
        ERR_clear_error();
        lock = fasttls_conf_lock(ctx);
        if (lock == NULL || CRYPTO_THREAD_read_lock(lock)) {
            ok = SSL_set_SSL_CTX(c->ssl, ctx) == ctx;
            if (lock != NULL)
                CRYPTO_THREAD_unlock(lock);
        }
    }
    /* Inside a step the queue must stay as the handshake left it: no error to clear there,
     * since SSL_set_SSL_CTX fails only for lack of memory, which the handshake reports. */
    if (!ok && !c->in_step)
        ERR_clear_error();
    return ok;
}

/* ---- connections ---- */

/* Connections live in memory the caller owns (Python: zeroed by ffi.new, freed when its last
 * reference goes). The SSL object and the buffers are released separately and may be released
 * first: with reference cycles, CPython runs every finalizer (the one releasing these included)
 * before it frees anything, and another object's finalizer may still use the connection. A
 * released connection has ssl == NULL, and every operation then fails cleanly.
 *
 * On failure the error stays on the queue for the caller (Python's error_from_queue reads it
 * and empties the queue). */
static int fasttls_conn_init_inner(fasttls_conn *c, SSL_CTX *ctx, int server)
{
    CRYPTO_RWLOCK *lock = fasttls_conf_lock(ctx);
    BIO *b;
    ERR_clear_error();
    if (lock == NULL || CRYPTO_THREAD_read_lock(lock)) {
        c->ssl = SSL_new(ctx);
        if (lock != NULL)
            CRYPTO_THREAD_unlock(lock);
    }
    b = c->ssl != NULL ? fasttls_bio_new(c) : NULL;
    if (b == NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
        return 0;
    }
    SSL_set_bio(c->ssl, b, b); /* one BIO both ways: SSL_set_bio takes the single reference */
    SSL_set_app_data(c->ssl, c);
    SSL_set_verify(c->ssl, SSL_VERIFY_NONE, verify_callback);
    if (server) {
        SSL_set_accept_state(c->ssl);
    } else {
        SSL_set_connect_state(c->ssl);
        /* A session ID context is a server's notion. A client's must be empty: OpenSSL refuses
         * to resume a session whose context differs, and the sessions it makes itself from a
         * TLS 1.3 PSK callback have none. */
        SSL_set_session_id_context(c->ssl, (const unsigned char *)"", 0);
    }
    /* The SSL holds a reference to its first context for as long as it lives (its session
     * context), so this pointer stays valid without one of our own. */
    c->first_ctx = ctx;
    c->n_locked = c->in_step = c->pha = 0;
    c->lock_io = 1;
    if (server && fasttls_ctx_is_keyless(ctx) && !fasttls_keyless_prepare(c)) {
        SSL_free(c->ssl);
        c->ssl = NULL;
        return 0;
    }
    return 1;
}

void fasttls_conn_release(fasttls_conn *c)
{
    unlink_live(c);
    fasttls_keyless_unwind(c); /* SSL_free would leave a paused signing job behind */
    /* A connection dropped without close_notify (the common case: most clients just close)
     * must not evict its session from the server's cache, nor invalidate a client's: OpenSSL
     * does that in SSL_free unless our close_notify counts as sent, so it is marked sent, as
     * the stdlib's _ssl does. A connection that failed was evicted when its fatal alert was
     * made. */
    if (c->ssl != NULL)
        SSL_set_shutdown(c->ssl, SSL_get_shutdown(c->ssl) | SSL_SENT_SHUTDOWN);
    fasttls_io_release(c);
    fasttls_hello_release(c);
    SSL_free(c->ssl);
    c->ssl = NULL;
    c->first_ctx = NULL;
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

/* 0 if the name is refused (e.g. longer than the 255 bytes SNI allows); the queue is left
 * empty, since the caller reports the name, not OpenSSL's reason. */
int fasttls_conn_set_peer_name(fasttls_conn *c, const char *name, int is_ip, int check, int sni)
{
    X509_VERIFY_PARAM *param;
    int ok;
    if (c->ssl == NULL)
        return 0;
    ERR_clear_error();
    param = SSL_get0_param(c->ssl);
    if (sni && !is_ip && !SSL_set_tlsext_host_name(c->ssl, name)) {
        ok = 0;
    } else if (!check) {
        ok = 1;
    } else if (is_ip) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(param, name);
    } else {
        /* Like the stdlib: no partial wildcards, and the subject CN is never consulted unless
         * asked (check_common_name), even for a certificate without DNS names. */
        X509_VERIFY_PARAM_set_hostflags(
            param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
                       (check == 2 ? 0 : X509_CHECK_FLAG_NEVER_CHECK_SUBJECT));
        ok = X509_VERIFY_PARAM_set1_host(param, name, 0);
    }
    if (!ok)
        ERR_clear_error();
    return ok;
}

/* A session to resume (client, before the handshake). 0 if OpenSSL refuses it; the queue is
 * left empty. */
int fasttls_conn_set_session(fasttls_conn *c, SSL_SESSION *session)
{
    int ok;
    if (c->ssl == NULL)
        return 0;
    ERR_clear_error();
    ok = SSL_set_session(c->ssl, session);
    if (!ok)
        ERR_clear_error();
    return ok;
}

/* The key exchange group negotiated ("x25519", "secp256r1", "ffdhe2048", ...), or NULL (none,
 * e.g. TLS 1.2 with finite-field DHE, or OpenSSL 1.1.1, which cannot name it). */
const char *fasttls_conn_group(fasttls_conn *c)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    int nid;
    /* SSL_ctrl's long carries an int: a NID, or TLSEXT_nid_unknown | the 16-bit group id. */
    if (c->ssl == NULL || (nid = (int)SSL_get_negotiated_group(c->ssl)) == 0)
        return NULL;
    return SSL_group_to_name(c->ssl, nid);
#else
    (void)c;
    return NULL;
#endif
}

static int fasttls_handshake_inner(fasttls_conn *c, const unsigned char *data, size_t len)
{
    int r, status = FASTTLS_OK;
    if (c->ssl == NULL)
        return released(c);
    ERR_clear_error();
    if (!fasttls_feed(c, data, len))
        return fail_nomem(c);
    if (!begin_step(c))
        status = fail_nomem(c);
    else {
        r = fasttls_keyless_enter(c) ? SSL_do_handshake(c->ssl) : -1;
        fasttls_keyless_leave(c);
        if (r == 1) {
            c->lock_io = c->pha;
            /* Jobs only for the handshake: in one, every read and write would cost ~10%. */
            if (c->sign != NULL)
                SSL_clear_mode(c->ssl, SSL_MODE_ASYNC);
            fasttls_hello_handshake_done(c);
            clear_stale_errors(); /* a completed handshake may still leave a note behind */
        } else {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ)
                status = FASTTLS_WANT_READ;
            else if (e == SSL_ERROR_WANT_CLIENT_HELLO_CB)
                status = FASTTLS_WANT_HELLO; /* see fasttls_hello.c */
            else if (e == SSL_ERROR_WANT_ASYNC && fasttls_keyless_waiting(c))
                status = FASTTLS_WANT_SIGN; /* see fasttls_keyless.c */
            else
                status = fail(c, e == SSL_ERROR_WANT_ASYNC ? SSL_ERROR_SSL : e);
        }
        release_step(c);
    }
    if (!fasttls_keep_rest(c))
        return fail_nomem(c);
    return status;
}

/* The SSL_read_ex loop of fasttls_read: the plaintext count in c->plain_len, a status. */
static int read_records(fasttls_conn *c)
{
    size_t n;
    for (;;) {
        if (c->plain_len == c->plain_cap &&
            !fasttls_reserve(&c->plain, &c->plain_cap, c->plain_cap + FASTTLS_RECORD_PLAIN_MAX))
            return fail_nomem(c);
        if (SSL_read_ex(c->ssl, c->plain + c->plain_len, c->plain_cap - c->plain_len, &n)) {
            c->plain_len += n;
            /* All input consumed and nothing buffered: another SSL_read_ex would only fail
             * with want-read, at the cost of the error path. */
            if (c->in_len == 0 && !SSL_has_pending(c->ssl))
                break;
            continue;
        }
        switch (SSL_get_error(c->ssl, 0)) {
        case SSL_ERROR_WANT_READ:
            break;
        case SSL_ERROR_ZERO_RETURN:
            ERR_clear_error();
            return FASTTLS_CLOSED;
        default:
            return fail(c, SSL_get_error(c->ssl, 0));
        }
        break;
    }
    /* A peer's KeyUpdate that asks for ours: OpenSSL holds the reply until our next write.
     * Produce it now (into c->out: pending_output), so a reader that never writes does not
     * leave the peer waiting. SSL_key_update + SSL_do_handshake is the documented way to send
     * a scheduled KeyUpdate at once. (The answer to a post-handshake CertificateRequest needs
     * nothing of the kind: OpenSSL writes it while reading the request.) */
    if (SSL_get_key_update_type(c->ssl) != SSL_KEY_UPDATE_NONE &&
        (!SSL_key_update(c->ssl, SSL_KEY_UPDATE_NOT_REQUESTED) || SSL_do_handshake(c->ssl) != 1))
        return fail(c, SSL_get_error(c->ssl, 0));
    return FASTTLS_OK;
}

/* Returns the plaintext length (in c->plain), or a negative status; on FASTTLS_CLOSED and
 * FASTTLS_ERROR, plain_len still counts the plaintext decrypted before. */
static ptrdiff_t fasttls_read_inner(fasttls_conn *c, const unsigned char *data, size_t len)
{
    int status;
    c->plain_len = 0;
    if (c->ssl == NULL)
        return released(c);
    clear_stale_errors();
    fasttls_shrink(&c->plain, &c->plain_cap, 0);
    if (!fasttls_feed(c, data, len))
        return fail_nomem(c);
    /* Plaintext never outgrows the ciphertext, plus at most one record already buffered: sized
     * so, small messages keep a small buffer (idle connections stay lean). */
    if (!fasttls_reserve(&c->plain, &c->plain_cap,
                         c->in_len + (SSL_has_pending(c->ssl) ? FASTTLS_RECORD_PLAIN_MAX : 1))) {
        status = fail_nomem(c);
    } else if (!c->lock_io) {
        status = read_records(c);
    } else if (!begin_step(c)) {
        status = fail_nomem(c);
    } else {
        status = read_records(c);
        release_step(c);
    }
    if (!fasttls_keep_rest(c))
        return fail_nomem(c);
    return status == FASTTLS_OK ? (ptrdiff_t)c->plain_len : status;
}

/* Returns how many bytes of c->out to send, all of them; they count as taken (out_len is 0
 * again), so the caller copies them before its next call on this connection. */
static ptrdiff_t fasttls_write_inner(fasttls_conn *c, const unsigned char *data, size_t len)
{
    size_t written, n;
    int ok;
    if (c->ssl == NULL)
        return released(c);
    if (c->out_len == 0)
        fasttls_shrink(&c->out, &c->out_cap, 0);
    /* Room for the records' headers and tags up front: the BIO then never reallocates. */
    if (len && (len > (SIZE_MAX - c->out_len) / 2 || /* the reservation below cannot wrap */
                !fasttls_reserve(&c->out, &c->out_cap,
                                 c->out_len + len + (len / FASTTLS_RECORD_PLAIN_MAX + 1) * 64)))
        return fail_nomem(c);
    if (len && !c->lock_io) {
        if (!SSL_write_ex(c->ssl, data, len, &written))
            return fail(c, SSL_get_error(c->ssl, 0));
    } else if (len) {
        clear_stale_errors();
        if (!begin_step(c))
            return fail_nomem(c);
        ok = SSL_write_ex(c->ssl, data, len, &written);
        release_step(c);
        if (!ok)
            return fail(c, SSL_get_error(c->ssl, 0));
    }
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

/* Client, before the handshake: offer post-handshake authentication (the post_handshake_auth
 * extension), so a TLS 1.3 server may ask for a certificate later. fasttls_read then answers
 * its CertificateRequest (the answer goes to c->out). */
int fasttls_conn_enable_pha(fasttls_conn *c)
{
    if (c->ssl == NULL)
        return 0;
    SSL_set_post_handshake_auth(c->ssl, 1);
    c->pha = c->lock_io = 1;
    return 1;
}

/* Server, after a TLS 1.3 handshake: ask the client for a certificate now. The
 * CertificateRequest goes to c->out at once; the client's answer is read, and verified, by
 * fasttls_read. The verify mode must include SSL_VERIFY_PEER (fasttls_conn_set_verify).
 * FASTTLS_ERROR (the reason captured as for any failure) if OpenSSL refuses: not TLS 1.3, the
 * client did not offer it, a request already pending. The connection stays usable then. */
static int verify_client_post_handshake_inner(fasttls_conn *c)
{
    int r, status = FASTTLS_OK;
    if (c->ssl == NULL)
        return released(c);
    ERR_clear_error();
    if (!begin_step(c))
        return fail_nomem(c);
    if (!SSL_verify_client_post_handshake(c->ssl)) {
        status = fail(c, SSL_ERROR_SSL);
    } else {
        c->pha = c->lock_io = 1;
        r = SSL_do_handshake(c->ssl); /* writes the request; then wants the client's answer */
        if (r != 1 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ)
            status = fail(c, SSL_get_error(c->ssl, r));
        ERR_clear_error();
    }
    release_step(c);
    return status;
}

void fasttls_conn_release_buffers(fasttls_conn *c)
{
    if (c->ssl == NULL)
        return;
    SSL_free_buffers(c->ssl); /* refuses, harmlessly, while a partial record is buffered */
    if (c->out_len == 0 && c->out_cap > FASTTLS_SMALL_BUFFER) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    c->plain_len = 0;
    if (c->plain_cap > FASTTLS_SMALL_BUFFER) {
        free(c->plain);
        c->plain = NULL;
        c->plain_cap = 0;
    }
    if (c->held_len == 0) {
        free(c->held);
        c->held = NULL;
        c->held_cap = 0;
    }
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

#define IN_FLIGHT(type, call)                                                                  \
    do {                                                                                       \
        type result_;                                                                          \
        enter(c);                                                                              \
        result_ = (call);                                                                      \
        leave(c);                                                                              \
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

ptrdiff_t fasttls_py_read(fasttls_conn *c, const unsigned char *data, size_t len)
{
    ptrdiff_t n = fasttls_read(c, data, len);
    if (n >= 0 && (c->plain != c->plain_told || c->out_len != 0)) {
        c->plain_told = c->plain;
        return FASTTLS_LOOK;
    }
    return n;
}

ptrdiff_t fasttls_py_write(fasttls_conn *c, const unsigned char *data, size_t len)
{
    ptrdiff_t n = fasttls_write(c, data, len);
    if (n > 0 && c->out != c->out_told) {
        c->out_told = c->out;
        c->out_len = (size_t)n; /* not taken: the caller takes it from out */
        return FASTTLS_LOOK;
    }
    return n;
}

int fasttls_shutdown(fasttls_conn *c)
{
    IN_FLIGHT(int, fasttls_shutdown_inner(c));
}

/* Listed first, so that fasttls_quiesce sees it busy; unlisted again if it fails (the caller
 * then frees it without fasttls_conn_release). */
int fasttls_conn_init(fasttls_conn *c, SSL_CTX *ctx, int server)
{
    int ok;
    link_live(c);
    enter(c);
    ok = fasttls_conn_init_inner(c, ctx, server);
    leave(c);
    if (!ok)
        unlink_live(c);
    return ok;
}

int fasttls_conn_verify_client_post_handshake(fasttls_conn *c)
{
    IN_FLIGHT(int, verify_client_post_handshake_inner(c));
}
