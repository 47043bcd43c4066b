"""A context chosen by sni_callback stays protected for the rest of the handshake.

The callback switches the connection to another context in the middle of a handshake step
(SSL_do_handshake reads the ClientHello, calls it, then chooses a cipher and a certificate from
the new context). Threads that change the chosen context meanwhile (set_ciphers, set_cert,
load_verify_locations) must wait for that step: before, they freed the cipher list the step was
reading, and the server crashed.

The stress runs in a child process, so that a crash is a failed test rather than a dead test
run; it is bounded by connection counts and a deadline."""
import os
import subprocess
import sys
import textwrap

import pytest

from support.requires import IN_CI  # noqa: F401  (the support package must import)

CHILD = textwrap.dedent(
    """
    import ssl, sys, threading, time
    sys.path.insert(0, "tests")
    import fasttls
    from support.certs import Identity
    from support.pump import pump

    THREADS, PER_THREAD, DEADLINE = 4, {per_thread}, time.monotonic() + {deadline}
    version = ssl.TLSVersion.{version}
    first = Identity("ecdsa", "localhost", "switched.example")
    second = Identity("ecdsa", "switched.example", ca=first.ca)
    chosen = fasttls.newctx()
    chosen.set_cert(first.chain_pem, first.key_pem)
    front = fasttls.newctx()
    front.set_cert(first.chain_pem, first.key_pem)
    front.sni_callback = lambda tls, name: chosen if name == "switched.example" else None
    client_ctx = fasttls.newctx(cadata=first.ca_pem, minimum_version=version,
                                maximum_version=version)
    suites = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305",
              "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
    tls13 = ("TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256",
             "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256")
    done = threading.Event()
    changes = [0]
    failures = []

    def change():
        n = 0
        while not done.is_set() and time.monotonic() < DEADLINE:
            # Mostly the cheap changes that free what a handshake reads (the cipher lists), so
            # they land inside handshake steps often; now and then the others.
            step = n % 16
            if step == 14:
                identity = (first, second)[n % 2]
                chosen.set_cert(identity.chain_pem, identity.key_pem)
            elif step == 15:
                chosen.load_verify_locations(cadata=first.ca_pem)
            elif step % 2:
                chosen.set_ciphers(suites[n % 3])
            else:
                chosen.set_ciphersuites(tls13[n % 3])
            n += 1
        changes[0] = n

    def connect():
        try:
            for i in range(PER_THREAD):
                if time.monotonic() > DEADLINE:
                    break
                client = fasttls.newtls("client", client_ctx, "switched.example")
                server = fasttls.newtls("server", front)
                pump(client, server)
                assert server.read(client.write(b"ping %d" % i)) == b"ping %d" % i
        except BaseException as exc:
            failures.append(repr(exc))

    changer = threading.Thread(target=change)
    workers = [threading.Thread(target=connect) for _ in range(THREADS)]
    changer.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join(max(DEADLINE - time.monotonic(), 1) + 5)
    done.set()
    changer.join(10)
    if any(w.is_alive() for w in workers) or changer.is_alive():
        print("STUCK"); sys.exit(3)
    print("changes", changes[0], "failures", failures)
    sys.exit(1 if failures else 0)
    """
)


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_chosen_context_changed_during_handshakes(version):
    script = CHILD.format(per_thread=1500, deadline=60, version=version)
    # Freed memory filled with a pattern (glibc): a use after free reads garbage pointers and
    # crashes, instead of reading stale but intact data and passing by luck.
    env = dict(os.environ, MALLOC_PERTURB_="165")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=150, env=env)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-3000:])
    assert "changes" in done.stdout
    assert int(done.stdout.split()[1]) > 10, done.stdout  # the changer really ran alongside
