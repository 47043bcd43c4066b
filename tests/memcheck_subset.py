"""The C engine under valgrind memcheck: a subset of the tests' work (handshakes in TLS 1.2 and
1.3 with ECDSA and RSA keys, mutual TLS, ALPN, SNI switching, resumption, data both ways, large
writes, release_buffers, close_notify, verification failures, garbage and truncated input,
abandoned handshakes, socket I/O inside the engine, the shared session store, shared
session-ticket keys, keyless signing pauses) in one Python process run under

    valgrind --tool=memcheck --error-exitcode=99 --errors-for-leak-kinds=definite --leak-check=full

with PYTHONMALLOC=malloc and tests/valgrind-python.supp (CPython's own noise). Passing means: no
invalid read or write, no use of uninitialised memory, no definite leak anywhere (fasttls_*
frames in particular). Usage:

    python tests/memcheck_subset.py             # certificates made here, then valgrind
    python tests/memcheck_subset.py --workload DIR   # the workload alone (what valgrind runs)

Exit status: 0 clean, 1 errors found (the valgrind log is printed), 2 valgrind missing.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SUPPRESSIONS = os.path.join(HERE, "valgrind-python.supp")


def make_certs(directory):
    import trustme

    for kind, key_type in (("ecdsa", trustme.KeyType.ECDSA), ("rsa", trustme.KeyType.RSA)):
        ca = trustme.CA(key_type=key_type)
        leaf = ca.issue_cert("localhost", "other.example", key_type=key_type)
        client = ca.issue_cert("client.example", key_type=key_type)
        for name, blob in (("ca", ca.cert_pem.bytes()),
                           ("chain", b"".join(b.bytes() for b in leaf.cert_chain_pems)),
                           ("key", leaf.private_key_pem.bytes()),
                           ("client-chain", b"".join(b.bytes() for b in client.cert_chain_pems)),
                           ("client-key", client.private_key_pem.bytes())):
            with open(os.path.join(directory, f"{kind}-{name}.pem"), "wb") as f:
                f.write(blob)
    stranger = trustme.CA(key_type=trustme.KeyType.ECDSA)
    with open(os.path.join(directory, "stranger-ca.pem"), "wb") as f:
        f.write(stranger.cert_pem.bytes())


def workload(directory):
    import gc
    import ssl

    import fasttls
    from support.pump import pump, pump_sslobjects

    def pem(name):
        with open(os.path.join(directory, name + ".pem"), "rb") as f:
            return f.read()


    def server_ctx(kind, **options):
        ctx = fasttls.newctx(**options)
        ctx.set_cert(pem(f"{kind}-chain"), pem(f"{kind}-key"))
        return ctx

    def expect_error(cls, call, *args):
        try:
            call(*args)
        except cls as exc:
            assert isinstance(getattr(exc, "alert", b""), bytes)
            return exc
        raise AssertionError(f"{call} did not raise {cls.__name__}")

    for kind in ("ecdsa", "rsa"):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            sctx = server_ctx(kind)
            sctx.set_alpn_protocols(["h2", "http/1.1"])
            cctx = fasttls.newctx(cadata=pem(f"{kind}-ca"), maximum_version=version)
            cctx.set_alpn_protocols(["http/1.1"])
            session = None
            for i in range(3):
                client = fasttls.newtls("client", cctx, "localhost", session=session)
                server = fasttls.newtls("server", sctx)
                pump(client, server)
                assert client.selected_alpn_protocol() == "http/1.1"
                assert client.getpeercert()["subjectAltName"]
                assert client.getpeercert(True)
                client.cipher(), client.version(), server.session_reused()
                data = os.urandom(40_000 if i == 1 else 300)
                received, stream = b"", client.write(data)
                # fed in pieces: partial records are held between calls
                for k in range(0, len(stream), 1000):
                    received += server.read(stream[k:k + 1000])
                assert received == data
                assert client.read(server.write(b"pong")) == b"pong"
                client.release_buffers()
                server.release_buffers()
                assert client.read(server.write(b"again")) == b"again"
                session = client.session
                assert server.read(client.close()) == b"" and server.eof
                assert client.read(server.close()) == b"" and client.eof
                expect_error(fasttls.SSLZeroReturnError, client.write, b"late")
            # mutual TLS
            mctx = server_ctx(kind, verify_mode=ssl.CERT_REQUIRED, cadata=pem(f"{kind}-ca"))
            mclient_ctx = fasttls.newctx(cadata=pem(f"{kind}-ca"), maximum_version=version)
            mclient_ctx.set_cert(pem(f"{kind}-client-chain"), pem(f"{kind}-client-key"))
            client = fasttls.newtls("client", mclient_ctx, "localhost")
            server = fasttls.newtls("server", mctx)
            pump(client, server)
            assert server.getpeercert()
            # verification failures: wrong name, unknown CA, missing client certificate
            for client_ctx, name in ((cctx, "wrong.example"),
                                     (fasttls.newctx(cadata=pem("stranger-ca")), "localhost")):
                client = fasttls.newtls("client", client_ctx, name)
                exc = expect_error(fasttls.SSLCertVerificationError, pump, client,
                                   fasttls.newtls("server", sctx))
                assert exc.verify_message
            expect_error(fasttls.SSLError, pump, fasttls.newtls("client", cctx, "localhost"),
                         fasttls.newtls("server", mctx))
            # garbage, truncated and forged input at each stage
            for garbage in (b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.1\r\n\r\n"):
                expect_error(fasttls.SSLError, fasttls.newtls("server", sctx).handshake, garbage)
            client = fasttls.newtls("client", cctx, "localhost")
            hello = client.handshake()
            expect_error(fasttls.SSLError, client.handshake, b"\x15\x03\x03\x00\x02\x02\x28")
            abandoned = fasttls.newtls("server", sctx)
            abandoned.handshake(hello[: len(hello) // 2])  # a partial record, never completed
            client = fasttls.newtls("client", cctx, "localhost")
            server = fasttls.newtls("server", sctx)
            pump(client, server)
            record = bytearray(client.write(b"forged"))
            record[-1] ^= 1
            expect_error(fasttls.SSLError, server.read, bytes(record))
            client = fasttls.newtls("client", cctx, "localhost")
            server = fasttls.newtls("server", sctx)
            pump(client, server)
            server.read(client.write(b"x" * 100)[:50])  # truncated, then dropped
            del client, server, abandoned
    # SNI: the callback switches contexts
    sctx, other = server_ctx("ecdsa"), server_ctx("ecdsa")
    sctx.sni_callback = lambda tls, name: other if name == "other.example" else None
    cctx = fasttls.newctx(cadata=pem("ecdsa-ca"))
    for name in ("other.example", "localhost"):
        client = fasttls.newtls("client", cctx, name)
        server = fasttls.newtls("server", sctx)
        pump(client, server)
    store_workload(pem, server_ctx)
    keyless_workload(pem)
    # keylog on and off
    keylog = os.path.join(directory, "keylog.txt")
    sctx.keylog_filename = keylog
    pump(fasttls.newtls("client", cctx, "localhost"), fasttls.newtls("server", sctx))
    sctx.keylog_filename = None
    # shared session-ticket keys (80- and 48-byte), across two contexts, rotated, replaced,
    # and freed with their context; TLS 1.2 and 1.3
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        old, new = os.urandom(48), os.urandom(80)
        first, second = server_ctx("ecdsa"), server_ctx("ecdsa")
        first.set_session_ticket_keys([old])
        second.set_session_ticket_keys([new, old])
        tctx = fasttls.newctx(cadata=pem("ecdsa-ca"), minimum_version=version,
                              maximum_version=version)
        session = None
        for ctx in (first, second, second):
            client = fasttls.newtls("client", tctx, "localhost", session=session)
            server = fasttls.newtls("server", ctx)
            pump(client, server)
            client.read(server.write(b"t"))
            assert client.session_reused() == (session is not None)
            session = client.session
        keyfile = os.path.join(directory, "ticket.key")
        with open(keyfile, "wb") as f:
            f.write(os.urandom(80))
        second.load_session_ticket_keys([keyfile])  # the ticket's key is gone: full handshake
        client = fasttls.newtls("client", tctx, "localhost", session=session)
        server = fasttls.newtls("server", second)
        pump(client, server)
        assert not client.session_reused()
        expect_error(ValueError, second.set_session_ticket_keys, [b"short"])
        second.set_session_ticket_keys([])
        assert second.session_ticket_stats()["keys"] == 0
        del first, second, client, server, session
    # the drop-in layer: ssl.SSLObject from fasttls.SSLContext over MemoryBIOs
    dclient = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    dclient.load_verify_locations(os.path.join(directory, "ecdsa-ca.pem"))
    dserver = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    dserver.load_cert_chain(os.path.join(directory, "ecdsa-chain.pem"),
                            os.path.join(directory, "ecdsa-key.pem"))
    for attempt in range(2):
        bios = [ssl.MemoryBIO() for _ in range(4)]
        c = dclient.wrap_bio(bios[0], bios[1], server_hostname="localhost")
        s = dserver.wrap_bio(bios[2], bios[3], server_side=True)
        pump_sslobjects(c, s, *bios, limit=10)
        c.write(b"hello drop-in" * 1000)
        bios[2].write(bios[1].read())
        got = b""
        while len(got) < 13000:
            got += s.read(65536)
        assert got == b"hello drop-in" * 1000
        if attempt:
            bios[0].write(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # a forged record
            expect_error(ssl.SSLError, c.read, 100)
    # socket I/O inside the engine: both ends over a socket pair, the server in a thread;
    # full duplex, non-blocking, a timeout, close_notify, a transport EOF, a closed descriptor
    import socket
    import threading

    payload = os.urandom(300_000)
    for attempt in range(2):
        a, b = socket.socketpair()
        server_tls = fasttls.newtls("server", server_ctx("ecdsa"))

        def serve():
            assert server_tls.handshake_on(b.fileno(), 20000)
            got = b""
            while len(got) < len(payload):
                got += server_tls.recv_from(b.fileno(), 20000)
            assert server_tls.send_to(b.fileno(), got, 20000) == 0
            if attempt:
                b.close()  # a transport EOF, no close_notify
            else:
                assert server_tls.recv_from(b.fileno(), 20000) == b""  # the client's close
                b.sendall(server_tls.close())

        thread = threading.Thread(target=serve)
        thread.start()
        tls = fasttls.newtls("client", fasttls.newctx(cadata=pem("ecdsa-ca")), "localhost")
        assert tls.handshake_on(a.fileno(), 20000)
        assert tls.recv_from(a.fileno(), 0) is None  # nothing yet (TLS 1.3 tickets consumed)
        lock = tls.enable_duplex()
        writer = threading.Thread(target=tls.send_to, args=(a.fileno(), payload, 20000))
        writer.start()
        got = b""
        while len(got) < len(payload):
            got += tls.recv_from(a.fileno(), 20000, 65536)
        writer.join()
        assert got == payload
        if attempt:
            expect_error(fasttls.SSLEOFError, tls.recv_from, a.fileno(), 20000)
        else:
            expect_error(socket.timeout, tls.recv_from, a.fileno(), 50)
            with lock:
                a.sendall(tls.close())
            assert tls.recv_from(a.fileno(), 20000) == b""  # the server's close_notify
        thread.join()
        fd = a.fileno()
        a.close()
        if attempt:  # still open after the EOF: the closed descriptor is what fails
            assert expect_error(OSError, tls.recv_from, fd, 0).errno == 9  # EBADF
        else:
            b.close()
    keyless_signing(directory)
    gc.collect()
    print("memcheck workload done")


def keyless_signing(directory):
    """csrc/fasttls_sign.c: keys loaded and freed, key ids, every scheme, refusals, bad input."""
    import gc

    from fasttls._errors import SSLError
    from fasttls.keyless import KeylessError, PrivateKey, certificate_key_id

    schemes = (0x0403, 0x0503, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0203)
    for kind in ("ecdsa", "rsa"):
        with open(os.path.join(directory, f"{kind}-key.pem"), "rb") as f:
            key = PrivateKey(f.read())
        with open(os.path.join(directory, f"{kind}-chain.pem"), "rb") as f:
            assert certificate_key_id(f.read()) == key.key_id
        for scheme in schemes:
            try:
                assert key.sign(scheme, b"to be signed" * 10)
            except KeylessError:
                assert not key.fits(scheme)
        del key
    for bad in (b"not a key", b""):
        try:
            PrivateKey(bad)
            raise AssertionError("a bad key loaded")
        except SSLError:
            pass
    try:
        certificate_key_id(b"not a certificate")
        raise AssertionError("a bad certificate read")
    except SSLError:
        pass
    gc.collect()


def keyless_workload(pem):
    """Keyless: the provider's keys and the signing job, answered, failed, wrongly answered,
    released while paused (the job unwound), released on another thread (the job handed back),
    resumed; an SNI switch to a keyless context."""
    import gc
    import ssl

    import fasttls
    from support.pump import pump
    from support.signers import FailingSigner, LocalSigner, TruncatingSigner

    for kind in ("ecdsa", "rsa"):
        key = pem(f"{kind}-key")
        cctx = fasttls.newctx(cadata=pem(f"{kind}-ca"))
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            cctx.maximum_version = version
            for signer in (LocalSigner(key), FailingSigner(key), TruncatingSigner(key)):
                sctx = fasttls.newctx()
                sctx.set_keyless_cert(pem(f"{kind}-chain"), signer)
                client = fasttls.newtls("client", cctx, "localhost")
                server = fasttls.newtls("server", sctx)
                try:
                    pump(client, server)
                except fasttls.SSLError:
                    assert type(signer) is not LocalSigner
                # released while paused, answered or not
                for answer in (False, True):
                    paused = fasttls.newtls("server", sctx)
                    paused.handshake(fasttls.newtls("client", cctx, "localhost").handshake())
                    assert paused.pause is not None
                    if answer:
                        paused.pause.resolve(1.0)
                    del paused
            # resumption: no signature
            sctx = fasttls.newctx()
            sctx.set_keyless_cert(pem(f"{kind}-chain"), LocalSigner(key))
            client = fasttls.newtls("client", cctx, "localhost")
            pump(client, fasttls.newtls("server", sctx))
            client.read(b"")
            again = fasttls.newtls("client", cctx, "localhost", session=client.session)
            server = fasttls.newtls("server", sctx)
            pump(again, server)
            assert server.session_reused()
        # released on another thread than its job's: ended by its own thread's next step.
        # The job is this (main) thread's: valgrind follows OpenSSL's fibre stacks there, not
        # on threads whose stacks lie near their heap arenas (false "uninitialised" reports).
        import threading
        box = [fasttls.newtls("server", sctx)]
        box[0].handshake(fasttls.newtls("client", cctx, "localhost").handshake())
        assert box[0].pause is not None
        releaser = threading.Thread(target=box.clear)  # the last reference goes there
        releaser.start()
        releaser.join(60)
        assert fasttls._binding.lib.fasttls_keyless_orphans() == 1
        pump(fasttls.newtls("client", cctx, "localhost"), fasttls.newtls("server", sctx))
        assert fasttls._binding.lib.fasttls_keyless_orphans() == 0
        plain = fasttls.newctx()
        plain.set_cert(pem(f"{kind}-chain"), key)
        keyless = fasttls.newctx()
        keyless.set_keyless_cert(pem(f"{kind}-chain"), LocalSigner(key))
        plain.sni_callback = lambda tls, name: keyless
        pump(fasttls.newtls("client", cctx, "localhost"), fasttls.newtls("server", plain))


def store_workload(pem, server_ctx):
    """The shared session store: lookups paused and resumed (found, missing, unreadable, sealed),
    new sessions taken, a connection released while its lookup is pending or after a session
    was handed in but before the handshake went on."""
    import ssl

    import fasttls
    from fasttls.store import MemoryStore, SealedStore, SealingKey
    from support.pump import first_session, resume

    inner = MemoryStore()
    stores = (inner, SealedStore(inner, SealingKey(bytearray(32))))
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        cctx = fasttls.newctx(cadata=pem("ecdsa-ca"), maximum_version=version)
        for store in stores:
            sctx = server_ctx("ecdsa")
            sctx.set_session_store(store)
            session = first_session(cctx, sctx)
            _, server = resume(cctx, sctx, session)
            assert server.session_reused()
            # released with the lookup pending, and after the hand-in
            for hand_in in (False, True):
                pending = fasttls.newtls("server", sctx)
                pending.handshake(fasttls.newtls("client", cctx, "localhost",
                                                 session=session).handshake())
                assert pending.pause is not None
                if hand_in:
                    pending.pause.resolve(1.0)
                del pending
            # an unreadable value: a full handshake
            pending = fasttls.newtls("server", sctx)
            pending.handshake(fasttls.newtls("client", cctx, "localhost",
                                             session=session).handshake())
            pending.pause.hand_in(b"\x30\x82\x01\x00 rubbish")
            del pending
            sctx.set_session_store(None)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--workload":
        workload(sys.argv[2])
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fasttls-memcheck-") as directory:
        make_certs(directory)
        log = os.path.join(directory, "valgrind.log")
        env = dict(os.environ, PYTHONMALLOC="malloc")
        env.pop("SSLKEYLOGFILE", None)
        command = [valgrind, "--tool=memcheck", "--error-exitcode=99",
                   "--errors-for-leak-kinds=definite", "--leak-check=full",
                   "--show-leak-kinds=definite", "--num-callers=30",
                   f"--suppressions={SUPPRESSIONS}", f"--log-file={log}",
                   sys.executable, os.path.abspath(__file__), "--workload", directory]
        print(" ".join(command), flush=True)
        proc = subprocess.run(command, env=env, timeout=3600, check=False)
        with open(log) as f:
            report = f.read()
        summary = re.findall(r"(ERROR SUMMARY: .*|definitely lost: .*|indirectly lost: .*)",
                             report)
        engine = re.findall(r"fasttls_\w+", report)
        print("\n".join(summary))
        if proc.returncode != 0:
            print(report[-30000:])
            print(f"memcheck: FAILED (exit status {proc.returncode}; fasttls frames in the "
                  f"report: {sorted(set(engine))})")
            return 1
        print("memcheck: clean")
        return 0


if __name__ == "__main__":
    sys.exit(main())
