/* Socket I/O inside the engine: receive + decrypt, encrypt + send, a handshake step with its
 * own I/O, each one call on the socket's file descriptor (cffi releases the GIL for it).
 *
 * Built over the memory operations of fasttls_conn.c, not beside them:
 *   - received ciphertext goes into the thread's receive buffer, or behind a partial record
 *     in the connection's input-hold buffer (c->held, where fasttls_feed/fasttls_keep_rest
 *     keep unconsumed input), and fasttls_read or fasttls_handshake consumes it from there:
 *     nothing allocated per call, and an idle connection holds no receive buffer (see
 *     receive);
 *   - c->out holds exactly the ciphertext not yet sent, oldest first, between calls: what the
 *     socket did not take stays there and leaves first next time, whichever call sends it;
 *   - the error queue, the configuration locks and the in-flight counting are those of the
 *     operations called (nothing here runs OpenSSL itself).
 *
 * Waiting: with timeout_ms != 0 a call waits in poll() up to the deadline (-1: forever) for the
 * socket; timeout_ms == 0 never blocks (MSG_DONTWAIT, whatever the descriptor's mode). EINTR is
 * returned (FASTTLS_IO_ERROR, io_errno EINTR) so the caller runs its signal handlers and
 * retries; a retried send passes no data (what it encrypted is in c->out).
 *
 * Full duplex (fasttls_conn_enable_duplex): one reader and one writer thread on one connection.
 * An SSL object and c->out are not safe for two threads at once, so every step that touches
 * them holds the connection's mutex; no system call that may block runs under it (a reader
 * blocked in recv() must not stop the writer, nor the other way round, or a full-duplex echo
 * deadlocks). The reader's recv() writes into c->held without the mutex: only the reader
 * touches c->held (a writer's SSL_write never reads once the handshake is done). Sends happen
 * under the mutex from the front of c->out, so records leave in the order they were made,
 * whichever thread sends them. Without duplex the mutex is never touched. */
#include "fasttls_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: Python ignores SIGPIPE already */
#endif

/* One recv() asks for this much, as asyncio's own socket transport does: an event loop wakes
 * up once per recv, and in bulk fasttls.aio with 64 KiB was slower than asyncio's sslproto
 * (blocking sockets measured the same CPU per byte either way). The buffer is the thread's
 * (see receive), so no connection pins it. */
#define RECV_SIZE (256u << 10)
/* A receive buffer no larger than this stays with a connection whose input was all consumed. */
#define HELD_KEEP (16u << 10)

/* A blocking send encrypts and sends this much at a time (see fasttls_send). */
#define SEND_CHUNK (256u << 10)

static const unsigned char nothing[1];

/* ---- locks ---- */

static void lock(fasttls_conn *c)
{
    if (c->duplex)
        pthread_mutex_lock(&c->io_mutex);
}

static void unlock(fasttls_conn *c)
{
    if (c->duplex)
        pthread_mutex_unlock(&c->io_mutex);
}

int fasttls_conn_enable_duplex(fasttls_conn *c)
{
    if (c->duplex)
        return 1;
    if (pthread_mutex_init(&c->io_mutex, NULL) != 0)
        return 0;
    c->duplex = 1;
    return 1;
}

void fasttls_conn_lock(fasttls_conn *c)
{
    lock(c);
}

void fasttls_conn_unlock(fasttls_conn *c)
{
    unlock(c);
}

void fasttls_io_release(fasttls_conn *c)
{
    if (c->duplex)
        pthread_mutex_destroy(&c->io_mutex);
    c->duplex = 0;
}

/* ---- time ---- */

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The deadline of a call (meaningful only for timeout_ms > 0). */
static long long deadline_of(int timeout_ms)
{
    return timeout_ms > 0 ? now_ms() + timeout_ms : 0;
}

static int io_error(fasttls_conn *c, int err)
{
    c->io_errno = err;
    return FASTTLS_IO_ERROR;
}

/* Wait until fd is ready for `events` or the deadline: FASTTLS_OK, FASTTLS_TIMEOUT or
 * FASTTLS_IO_ERROR. An error or hang-up condition counts as ready: the next recv()/send()
 * reports it. */
static int wait_fd(fasttls_conn *c, int fd, short events, int timeout_ms, long long deadline)
{
    struct pollfd p;
    int wait = -1, r;
    if (timeout_ms > 0) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return FASTTLS_TIMEOUT;
        wait = left > 0x7fffffff ? 0x7fffffff : (int)left;
    }
    p.fd = fd;
    p.events = events;
    p.revents = 0;
    r = poll(&p, 1, wait);
    if (r < 0)
        return io_error(c, errno);
    if (r == 0)
        return FASTTLS_TIMEOUT;
    if (p.revents & POLLNVAL)
        return io_error(c, EBADF);
    return FASTTLS_OK;
}

/* ---- sending ---- */

/* Send the front of c->out, as much as the socket takes now (all of it on a blocking socket
 * with blocking `flags`): FASTTLS_OK (maybe with bytes left) or FASTTLS_IO_ERROR. What went is
 * removed from c->out. Under the mutex. */
static int send_out(fasttls_conn *c, int fd, int flags)
{
    size_t sent = 0;
    int status = FASTTLS_OK;
    while (sent < c->out_len) {
        ssize_t n = send(fd, c->out + sent, c->out_len - sent, flags | MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            status = io_error(c, n < 0 ? errno : EIO);
            break;
        }
    }
    if (sent == c->out_len) {
        c->out_len = 0;
    } else if (sent) {
        /* Only the remainder the socket refused moves: at most one SEND_CHUNK when sending
         * waits; without waiting, what the caller gave at once (the drop-in bounds that). */
        memmove(c->out, c->out + sent, c->out_len - sent);
        c->out_len -= sent;
    }
    return status;
}

/* A fatal failure's alert (with anything unsent before it), sent if the socket takes it now
 * and left in c->out all the same: the caller hands it out on the exception (exc.alert) as
 * the memory operations do, and must not send it again. A courtesy to the peer: a socket too
 * full to take it loses it. Under the mutex. */
static void send_alert(fasttls_conn *c, int fd)
{
    size_t sent = 0;
    while (sent < c->out_len) {
        ssize_t n = send(fd, c->out + sent, c->out_len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0)
            break;
        sent += (size_t)n;
    }
}

/* Send all of c->out, waiting up to the deadline; with timeout_ms == 0, as much as goes now.
 * FASTTLS_OK (*left: the bytes still unsent), FASTTLS_TIMEOUT, FASTTLS_IO_ERROR. Takes the
 * mutex itself (only around the sends). */
static int flush(fasttls_conn *c, int fd, int timeout_ms, long long deadline, size_t *left)
{
    /* A blocking send() only where nothing else could need the connection meanwhile and no
     * deadline must be kept: the kernel then takes a large write in one call. */
    int flags = timeout_ms == -1 && !c->duplex ? 0 : MSG_DONTWAIT;
    int status;
    for (;;) {
        lock(c);
        status = c->out_len ? send_out(c, fd, flags) : FASTTLS_OK;
        *left = c->out_len;
        if (status != FASTTLS_OK || c->out_len == 0 || timeout_ms == 0) {
            unlock(c);
            return status;
        }
        unlock(c);
        status = wait_fd(c, fd, POLLOUT, timeout_ms, deadline);
        if (status != FASTTLS_OK)
            return status;
    }
}

/* Encrypt into c->out behind what is unsent; FASTTLS_OK or FASTTLS_ERROR (the alert sent if
 * the socket takes it). Under the mutex. */
static int encrypt(fasttls_conn *c, int fd, const unsigned char *data, size_t len)
{
    ptrdiff_t n;
    lock(c);
    n = fasttls_write(c, data, len);
    if (n >= 0)
        c->out_len = (size_t)n; /* fasttls_write counts them as taken: they are ours */
    else
        send_alert(c, fd);
    unlock(c);
    return n >= 0 ? FASTTLS_OK : (int)n;
}

ptrdiff_t fasttls_send(fasttls_conn *c, int fd, const unsigned char *data, size_t len,
                       int timeout_ms)
{
    long long deadline = deadline_of(timeout_ms);
    size_t left = 0, chunk;
    int status;
    /* Non-blocking: all of it now, the socket takes what it can. Waiting: a chunk at a time,
     * each sent before the next is encrypted, so the kernel copies ciphertext that is still
     * in cache and the peer starts decrypting sooner; a timeout or failure then leaves the
     * rest of `data` unencrypted (the caller knows as little as with the stdlib's sendall). */
    do {
        chunk = timeout_ms != 0 && len > SEND_CHUNK ? SEND_CHUNK : len;
        if (chunk && (status = encrypt(c, fd, data, chunk)) != FASTTLS_OK)
            return status;
        data += chunk;
        len -= chunk;
        status = flush(c, fd, timeout_ms, deadline, &left);
        if (status != FASTTLS_OK)
            return status;
    } while (len);
    return (ptrdiff_t)left;
}

/* ---- receiving ---- */

/* receive() took all the room it asked for: the socket may hold more. */
#define FILLED 1

/* Where a recv() goes. A connection whose input was all consumed receives into its thread's
 * buffer, and fasttls_read then keeps only what is left of a partial record (in c->held): an
 * idle connection holds no receive buffer, and a small message is read in place. A connection
 * with a partial record pending receives behind it, into c->held (no copy of the new bytes). */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_init(void)
{
    (void)pthread_key_create(&scratch_key, free); /* freed when its thread ends */
}

static unsigned char *thread_scratch(void)
{
    unsigned char *p;
    (void)pthread_once(&scratch_once, scratch_init);
    p = pthread_getspecific(scratch_key);
    if (p == NULL && (p = malloc(RECV_SIZE)) != NULL && pthread_setspecific(scratch_key, p) != 0) {
        free(p);
        p = NULL;
    }
    return p;
}

/* The input of the next decrypt: bytes in the thread's buffer, or none (all in c->held). */
typedef struct {
    const unsigned char *data;
    size_t len;
} incoming;

/* One recv(): FASTTLS_OK or FILLED (the bytes in *in, or appended to c->held),
 * FASTTLS_WANT_READ (would block), FASTTLS_EOF, FASTTLS_IO_ERROR (ENOMEM if no buffer).
 * Without the mutex (see the top). */
static int receive(fasttls_conn *c, int fd, int flags, incoming *in)
{
    unsigned char *into;
    size_t room;
    ssize_t n;
    /* `in` comes empty: decrypt and fasttls_handshake consume all of it, keeping what they
     * leave in c->held. */
    int scratch = c->held_len == 0;
    if (scratch) {
        if ((into = thread_scratch()) == NULL)
            return io_error(c, ENOMEM);
        room = RECV_SIZE;
    } else {
        if (!fasttls_reserve((char **)&c->held, &c->held_cap, c->held_len + RECV_SIZE))
            return io_error(c, ENOMEM);
        into = c->held + c->held_len;
        room = c->held_cap - c->held_len;
    }
    n = recv(fd, into, room, flags);
    if (n > 0) {
        if (scratch) {
            in->data = into;
            in->len = (size_t)n;
        } else {
            c->held_len += (size_t)n;
        }
        return (size_t)n == room ? FILLED : FASTTLS_OK;
    }
    if (n == 0)
        return FASTTLS_EOF;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return FASTTLS_WANT_READ;
    return io_error(c, errno);
}

/* Receive once something arrived, or a status; waits only with timeout_ms != 0. */
static int receive_wait(fasttls_conn *c, int fd, int timeout_ms, long long deadline,
                        incoming *in)
{
    int flags = timeout_ms == -1 ? 0 : MSG_DONTWAIT;
    for (;;) {
        int status = receive(c, fd, flags, in);
        if (status != FASTTLS_WANT_READ || timeout_ms == 0)
            return status;
        status = wait_fd(c, fd, POLLIN, timeout_ms, deadline);
        if (status != FASTTLS_OK)
            return status;
    }
}

/* Decrypt what c->held holds; send what reading produced for the peer (a KeyUpdate reply, an
 * alert) if the socket takes it now. A reply the socket did not take waits in c->out; a
 * caller that may wait and is alone on the connection waits for it to go (as the stdlib's
 * blocking SSL_read would), a full-duplex reader never does (it would wait behind a writer
 * the socket does not drain). The plaintext count, WANT_READ for none, CLOSED or ERROR; or
 * the status of a reply that could not be sent (IO_ERROR, TIMEOUT), the plaintext decrypted
 * with it counted in c->plain_len for the caller to keep. */
static ptrdiff_t decrypt(fasttls_conn *c, int fd, int timeout_ms, long long deadline,
                         incoming *in)
{
    ptrdiff_t n;
    size_t before, left;
    int sent = FASTTLS_OK;
    lock(c);
    before = c->out_len;
    n = fasttls_read(c, in->data, in->len); /* keeps what it leaves of in in c->held */
    in->data = nothing;
    in->len = 0;
    if (c->held_len == 0 && c->held_cap > HELD_KEEP) {
        free(c->held); /* all consumed: an idle connection keeps no receive buffer */
        c->held = NULL;
        c->held_cap = 0;
    }
    if (n == FASTTLS_ERROR)
        send_alert(c, fd);
    else if (c->out_len > before)
        sent = send_out(c, fd, MSG_DONTWAIT);
    unlock(c);
    if (n < 0)
        return n; /* CLOSED, ERROR: a reply's fate no longer matters */
    if (sent == FASTTLS_OK && !c->duplex && timeout_ms != 0 && c->out_len)
        sent = flush(c, fd, timeout_ms, deadline, &left);
    if (sent != FASTTLS_OK)
        return sent;
    return n == 0 ? FASTTLS_WANT_READ : n;
}

ptrdiff_t fasttls_recv(fasttls_conn *c, int fd, int timeout_ms)
{
    long long deadline = deadline_of(timeout_ms);
    ptrdiff_t n;
    int status;
    c->plain_len = 0; /* what a failure reports as decrypted before it is this call's only */
    /* Input kept from an earlier call (e.g. data that came with the last handshake flight)
     * may hold whole records: decrypt them before waiting for more. */
    incoming in = {nothing, 0};
    if (c->held_len && (n = decrypt(c, fd, timeout_ms, deadline, &in)) != FASTTLS_WANT_READ)
        return n;
    for (;;) {
        status = receive_wait(c, fd, timeout_ms, deadline, &in);
        if (status < 0)
            return status;
        n = decrypt(c, fd, timeout_ms, deadline, &in);
        /* Only part of a record, or records without data (tickets, KeyUpdate): wait again.
         * Non-blocking, WANT_READ must mean "drained" (edge-triggered callers rely on it): so
         * receive again while the socket filled all the room it was given. */
        if (n != FASTTLS_WANT_READ || (timeout_ms == 0 && status != FILLED))
            return n;
    }
}

/* ---- the handshake ---- */

int fasttls_handshake_fd(fasttls_conn *c, int fd, int timeout_ms)
{
    long long deadline = deadline_of(timeout_ms);
    incoming in = {nothing, 0};
    size_t left;
    int step, status;
    for (;;) {
        /* A step with what has arrived (the first needs nothing), then its flight leaves. */
        lock(c);
        step = fasttls_handshake(c, in.data, in.len); /* keeps what it leaves in c->held */
        in.data = nothing;
        in.len = 0;
        if (step == FASTTLS_ERROR)
            send_alert(c, fd);
        unlock(c);
        if (step == FASTTLS_ERROR)
            return step;
        status = flush(c, fd, timeout_ms, deadline, &left);
        if (step == FASTTLS_WANT_HELLO || step == FASTTLS_WANT_SIGN) /* the application's turn */
            return status != FASTTLS_OK ? status : step;
        if (step == FASTTLS_OK) {
            /* Done. A TLS 1.3 client that closes right after its Finished never reads the
             * server's tickets; OpenSSL tolerates EPIPE on them too: the next read reports
             * the end. */
            if (status == FASTTLS_IO_ERROR && (c->io_errno == EPIPE || c->io_errno == ECONNRESET))
                return FASTTLS_OK;
            if (status != FASTTLS_OK)
                return status;
            return left ? FASTTLS_WANT_WRITE : FASTTLS_OK;
        }
        if (status != FASTTLS_OK)
            return status;
        if (left)
            return FASTTLS_WANT_WRITE; /* non-blocking: the flight waits in c->out */
        status = receive_wait(c, fd, timeout_ms, deadline, &in);
        if (status < 0)
            return status;
    }
}
