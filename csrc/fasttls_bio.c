/* The connection BIO and its buffers.
 *
 * Why a custom BIO rather than OpenSSL's memory BIOs: incoming ciphertext is read by the SSL
 * object straight out of the caller's buffer (one copy fewer than writing it into a memory BIO
 * first), and outgoing ciphertext lands in a per-connection buffer that is reused, never zeroed,
 * and handed to Python in one piece. Both directions share one BIO. */
#include "fasttls_internal.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Buffers larger than this are given back after use instead of being kept for the next call, so a
 * single 64 MiB transfer does not pin 64 MiB per connection. 1 MiB writes stay within it. */
#define KEEP_BUFFER_MAX (4u << 20)

static BIO_METHOD *conn_bio_method;

int fasttls_reserve(char **buf, size_t *cap, size_t need)
{
    char *p;
    size_t n;
    if (need <= *cap)
        return 1;
    /* Doubling past half the address space would wrap to 0 and never end. */
    if (need > SIZE_MAX / 2)
        return 0;
    n = *cap ? *cap : FASTTLS_SMALL_BUFFER;
    while (n < need)
        n *= 2;
    p = realloc(*buf, n);
    if (p == NULL)
        return 0;
    *buf = p;
    *cap = n;
    return 1;
}

void fasttls_shrink(char **buf, size_t *cap, size_t len)
{
    if (*cap > KEEP_BUFFER_MAX && len == 0) {
        free(*buf);
        *buf = NULL;
        *cap = 0;
    }
}

static int conn_bio_write(BIO *b, const char *data, int len)
{
    fasttls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (!fasttls_reserve(&c->out, &c->out_cap, c->out_len + (size_t)len))
        return -1;
    memcpy(c->out + c->out_len, data, (size_t)len);
    c->out_len += (size_t)len;
    return len;
}

static int conn_bio_read(BIO *b, char *data, int len)
{
    fasttls_conn *c = BIO_get_data(b);
    size_t n;
    BIO_clear_retry_flags(b);
    if (c->in_len == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    if (len <= 0)
        return 0;
    /* n <= len, an int: the cast back cannot truncate. */
    n = (size_t)len < c->in_len ? (size_t)len : c->in_len;
    memcpy(data, c->in_ptr, n);
    c->in_ptr += n;
    c->in_len -= n;
    return (int)n;
}

static long conn_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    fasttls_conn *c = BIO_get_data(b);
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        /* A count, not a length to copy: saturate rather than wrap where long is 32 bits. */
        return c->in_len > (size_t)LONG_MAX ? LONG_MAX : (long)c->in_len;
    default:
        return 0;
    }
}

static int conn_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int conn_bio_destroy(BIO *b)
{
    BIO_set_data(b, NULL);
    return 1;
}

/* Called once at import, under the GIL. */
int fasttls_bio_method_init(void)
{
    if (conn_bio_method != NULL)
        return 1;
    conn_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "fasttls");
    if (conn_bio_method == NULL)
        return 0;
    BIO_meth_set_write(conn_bio_method, conn_bio_write);
    BIO_meth_set_read(conn_bio_method, conn_bio_read);
    BIO_meth_set_ctrl(conn_bio_method, conn_bio_ctrl);
    BIO_meth_set_create(conn_bio_method, conn_bio_create);
    BIO_meth_set_destroy(conn_bio_method, conn_bio_destroy);
    return 1;
}

BIO *fasttls_bio_new(fasttls_conn *c)
{
    BIO *b = BIO_new(conn_bio_method);
    if (b != NULL)
        BIO_set_data(b, c);
    return b;
}

/* Input for one call: straight from the caller's bytes unless earlier input is still held, in
 * which case the new bytes are appended to it so the stream stays in order. */
int fasttls_feed(fasttls_conn *c, const unsigned char *data, size_t len)
{
    if (c->held_len == 0) {
        c->in_ptr = data;
        c->in_len = len;
        c->from_held = 0;
        return 1;
    }
    if (len) {
        if (len > SIZE_MAX - c->held_len ||
            !fasttls_reserve((char **)&c->held, &c->held_cap, c->held_len + len))
            return 0;
        memcpy(c->held + c->held_len, data, len);
        c->held_len += len;
    }
    c->in_ptr = c->held;
    c->in_len = c->held_len;
    c->from_held = 1;
    return 1;
}

/* After the call: keep what the SSL object did not consume (e.g. application data that arrived
 * with the last handshake flight) for the next call; the caller's buffer is gone by then. */
int fasttls_keep_rest(fasttls_conn *c)
{
    int ok = 1;
    if (c->in_len == 0) {
        c->held_len = 0;
    } else if (c->from_held) {
        memmove(c->held, c->in_ptr, c->in_len);
        c->held_len = c->in_len;
    } else if (fasttls_reserve((char **)&c->held, &c->held_cap, c->in_len)) {
        memcpy(c->held, c->in_ptr, c->in_len);
        c->held_len = c->in_len;
    } else {
        ok = 0;
    }
    c->in_ptr = NULL;
    c->in_len = 0;
    return ok;
}
