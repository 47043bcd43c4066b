"""The OpenSSL error queue and OpenSSL's int-sized parameters.

The queue is per thread and shared by every OpenSSL user in it: an error left there turns the
next want-read or close_notify of any connection of the thread into a fatal error (SSL_get_error
looks at the queue first). So: every failing fasttls call leaves it empty, and a read that
starts on a queue someone else dirtied still reports what happened on its own connection.

Lengths: OpenSSL takes some lengths as C ints (BIO_new_mem_buf even reads -1 as "up to the first
NUL"); anything longer is refused with the limit named, never narrowed."""
import ssl

import pytest

import fasttls
from fasttls import _context
from fasttls._binding import ffi, lib
from support.pairs import connected_pair, make_pair
from support.pump import pump


def queue_is_empty():
    return lib.ERR_peek_last_error() == 0


def dirty_queue():
    """Leave an error on this thread's queue, as code outside fasttls may (a raw OpenSSL call
    that fails and is never read back)."""
    raw = fasttls.Context()
    assert lib.SSL_CTX_set_cipher_list(raw._ctx, b"NO-SUCH-CIPHER") == 0
    assert not queue_is_empty()


def split_record(client, plaintext=b"hello"):
    record = client.write(plaintext)
    assert len(record) > 5
    return record[:4], record[4:]


# -------------------------------------------------------------- one connection, then another


def test_refused_hostname_does_not_poison_the_next_read(identities):
    """The reported case: SNI refuses a 300-byte name; the error it raised in OpenSSL must not
    turn another connection's "record incomplete, wait" into a failure."""
    identity = identities["ecdsa"]
    client, server = connected_pair(identity)
    head, tail = split_record(client)
    with pytest.raises(ValueError, match="invalid hostname"):
        fasttls.newtls("client", fasttls.newctx(cadata=identity.ca_pem), "a" * 300)
    assert queue_is_empty()
    assert server.read(head) == b""  # incomplete: no error
    assert server.read(tail) == b"hello"


def test_a_read_on_a_dirty_queue_reports_its_own_state(identities):
    """Errors left by someone else (the stdlib's _ssl, pyca/cryptography, a raw call) in the same
    thread: an incomplete record is still "wait", a close_notify still a clean end."""
    client, server = connected_pair(identities["rsa"])
    head, tail = split_record(client)
    dirty_queue()
    assert server.read(head) == b""
    dirty_queue()
    assert server.read(tail) == b"hello"
    dirty_queue()
    assert server.read(client.close()) == b""
    assert server.eof
    assert queue_is_empty()


def test_a_write_on_a_dirty_queue(identities):
    client, server = connected_pair(identities["rsa"])
    dirty_queue()
    assert server.read(client.write(b"x" * 40000)) == b"x" * 40000


def test_a_failed_handshake_leaves_no_error_for_the_next_connection(identities, stranger_identity):
    """A verification failure on one pair, then a partial record on another pair."""
    client, server = connected_pair(identities["ecdsa"])
    head, tail = split_record(client)
    bad_client, bad_server = make_pair(identities["ecdsa"])
    bad_server_ctx = fasttls.newctx()
    bad_server_ctx.set_cert(stranger_identity.chain_pem, stranger_identity.key_pem)
    bad_server = fasttls.newtls("server", bad_server_ctx)
    with pytest.raises(fasttls.SSLCertVerificationError):
        pump(bad_client, bad_server)
    assert queue_is_empty()
    assert server.read(head) == b""
    assert server.read(tail) == b"hello"


def failing_calls(identity):
    """Configuration and connection calls that fail, each with what it raises."""
    ctx = fasttls.newctx(cadata=identity.ca_pem)
    return [
        ("set_cert", lambda: ctx.set_cert(b"not a certificate"), fasttls.SSLError),
        ("set_cert key", lambda: ctx.set_cert(identity.chain_pem, b"no key"), fasttls.SSLError),
        ("add_cert", lambda: ctx.add_cert(b"junk", identity.key_pem), fasttls.SSLError),
        ("set_ciphers", lambda: ctx.set_ciphers("NOPE"), fasttls.SSLError),
        ("set_ciphersuites", lambda: ctx.set_ciphersuites("NOPE"), fasttls.SSLError),
        ("cadata", lambda: ctx.load_verify_locations(cadata=b"\x30\x03junk"), fasttls.SSLError),
        ("cadata pem", lambda: ctx.load_verify_locations(cadata="-----BEGIN CERTIFICATE-----"),
         fasttls.SSLError),
        ("set_groups", lambda: ctx.set_groups(["no-such-group"]), ValueError),
        ("set_ecdh_curve", lambda: ctx.set_ecdh_curve("nope"), ValueError),
        ("maximum_version", lambda: setattr(ctx, "maximum_version", 0x7F), ValueError),
        ("long hostname", lambda: fasttls.newtls("client", ctx, "a" * 300), ValueError),
        ("bad ip", lambda: fasttls.newtls("client", ctx, "b" * 254 + ".c"), ValueError),
    ]


@pytest.mark.parametrize("index", range(12))
def test_every_failing_call_leaves_the_queue_empty(identities, index):
    name, call, error = failing_calls(identities["ecdsa"])[index]
    with pytest.raises(error):
        call()
    assert queue_is_empty(), name


def test_load_dh_params_failure_leaves_the_queue_empty(tmp_path, identities):
    junk = tmp_path / "junk.pem"
    junk.write_bytes(identities["rsa"].chain_pem)
    with pytest.raises(ssl.SSLError):
        fasttls.newctx().load_dh_params(junk)
    assert queue_is_empty()


def test_a_failed_read_leaves_the_queue_empty(identities):
    client, server = connected_pair(identities["rsa"])
    record = bytearray(client.write(b"hello"))
    record[-1] ^= 1  # a bad tag
    with pytest.raises(fasttls.SSLError) as failed:
        server.read(bytes(record))
    assert failed.value.reason == "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"
    assert queue_is_empty()


def test_configuration_errors_are_their_own_not_left_overs(identities):
    """A failing setter reports its own reason even if the queue held another error before."""
    dirty_queue()  # NO_CIPHER_MATCH
    with pytest.raises(fasttls.SSLError) as failed:
        fasttls.newctx().set_cert(b"not a certificate")
    assert failed.value.reason == "NO_START_LINE"


# --------------------------------------------------------------------- int-sized parameters


BEYOND_INT = 2**32  # added to a real length: narrowed to an int, it would be the real length


def test_engine_refuses_pem_lengths_beyond_int(identities):
    """Lengths that an int cast would wrap to the real length (so a narrowing engine would
    silently succeed) are refused before anything is read."""
    identity = identities["ecdsa"]
    ctx = fasttls.Context()
    chain, key = identity.chain_pem, identity.key_pem
    assert lib.fasttls_ctx_use_identity(ctx._ctx, chain, BEYOND_INT + len(chain), key, len(key),
                                        ffi.NULL, 0, lib.FASTTLS_IDENTITY_REPLACE) == 0
    assert lib.fasttls_ctx_use_identity(ctx._ctx, chain, len(chain), key, BEYOND_INT + len(key),
                                        ffi.NULL, 0, lib.FASTTLS_IDENTITY_REPLACE) < 0
    lib.ERR_clear_error()
    store = lib.fasttls_store_new(ffi.NULL, ffi.NULL, 0)
    try:
        assert lib.fasttls_store_add_ca(store, identity.ca_pem, BEYOND_INT + len(identity.ca_pem),
                                        1) == -1
    finally:
        lib.X509_STORE_free(store)
    lib.ERR_clear_error()
    # The real lengths work: the refusals above were about the length only.
    assert lib.fasttls_ctx_use_identity(ctx._ctx, chain, len(chain), key, len(key), ffi.NULL, 0,
                                        lib.FASTTLS_IDENTITY_REPLACE) == 1


def test_engine_refuses_dh_params_beyond_int(tmp_path):
    pem = b"-----BEGIN DH PARAMETERS-----\n"
    ctx = fasttls.Context()
    assert lib.fasttls_ctx_load_dh_params(ctx._ctx, pem, BEYOND_INT + len(pem)) == 0
    lib.ERR_clear_error()


def test_python_refuses_oversized_pem_naming_the_limit(identities, monkeypatch):
    """The same limit at the Python level, as OverflowError (a small limit stands in for 2 GiB)."""
    identity = identities["ecdsa"]
    monkeypatch.setattr(_context, "_INT_MAX", 100)
    ctx = fasttls.Context()
    with pytest.raises(OverflowError, match=r"certificate chain is \d+ bytes; OpenSSL takes at "
                                            r"most 100"):
        ctx.set_cert(identity.chain_pem, identity.key_pem)
    with pytest.raises(OverflowError, match="cadata is"):
        ctx.load_verify_locations(cadata=identity.ca_pem.decode())


def test_alpn_list_longer_than_tls_allows():
    """Each name fits its 1-byte length, but the list exceeds the extension's 16-bit length."""
    ctx = fasttls.Context()
    names = ["p%03d" % i + "x" * 250 for i in range(300)]  # 300 x 255 bytes
    with pytest.raises(ValueError, match="at most 65535"):
        ctx.set_alpn_protocols(names)
    wire = b"".join(bytes([255]) + n.encode() for n in names)
    assert lib.fasttls_ctx_set_alpn(ctx._ctx, wire, len(wire)) == 0
    lib.ERR_clear_error()
    # Up to the limit is fine, and a handshake still works with the previous (empty) list.
    ctx.set_alpn_protocols(names[:256])


def test_password_longer_than_openssl_takes():
    with pytest.raises(ValueError, match="password cannot be longer than 1024 bytes"):
        fasttls.newctx().set_cert(b"x", b"y", password="p" * 1025)


def test_long_passwords_are_used_whole(identities):
    """A 1023-byte password (pyca/cryptography's longest) decrypts; the same with one byte more
    (within OpenSSL's 1024) does not: nothing is cut to fit."""
    from cryptography.hazmat.primitives import serialization

    identity = identities["ecdsa"]
    password = b"q" * 1023
    key = serialization.load_pem_private_key(identity.key_pem, None)
    encrypted = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(password))
    ctx = fasttls.newctx()
    ctx.set_cert(identity.chain_pem, encrypted, password=password)
    with pytest.raises(fasttls.SSLError):
        ctx.set_cert(identity.chain_pem, encrypted, password=password + b"q")
