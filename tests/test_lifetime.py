"""Lifetime: fasttls objects freed in any order never crash.

Contexts dropped before their connections, connections never closed, handshakes abandoned
half-way (with a partial record held), reference cycles the garbage collector breaks in an
arbitrary order, objects freed in another thread than the one that made them, and interpreter
exit with live objects of every kind (run in a child process: exit status 0, nothing on stderr).
"""
import gc
import subprocess
import sys
import threading
import weakref

import pytest

import fasttls
from support.pump import pump


@pytest.fixture(scope="module")
def pems(ec_ca):
    leaf = ec_ca.issue_cert("localhost")
    other = ec_ca.issue_cert("other.example", "localhost")
    join = lambda c: b"".join(b.bytes() for b in c.cert_chain_pems)
    return {
        "ca": ec_ca.cert_pem.bytes(),
        "chain": join(leaf), "key": leaf.private_key_pem.bytes(),
        "other_chain": join(other), "other_key": other.private_key_pem.bytes(),
    }


def server_ctx(pems, prefix=""):
    ctx = fasttls.newctx()
    ctx.set_cert(pems[prefix + "chain"], pems[prefix + "key"])
    return ctx


def client_ctx(pems, **options):
    return fasttls.newctx(cadata=pems["ca"], **options)




def exchange(client, server, data=b"ping"):
    assert server.read(client.write(data)) == data
    assert client.read(server.write(data[::-1])) == data[::-1]


def test_contexts_dropped_before_their_connections(pems):
    client = fasttls.newtls("client", client_ctx(pems), "localhost")
    server = fasttls.newtls("server", server_ctx(pems))
    gc.collect()  # no name refers to either context any more
    pump(client, server)
    exchange(client, server)
    session = client.session
    assert server.read(client.close()) == b""
    del client, server
    gc.collect()
    # a session outlives its connection and keeps its context alive; another context refuses it
    # (it would skip that context's verification)
    with pytest.raises(ValueError, match="different SSLContext"):
        fasttls.newtls("client", client_ctx(pems), "localhost", session=session)
    client = fasttls.newtls("client", session._context, "localhost", session=session)
    server = fasttls.newtls("server", server_ctx(pems))
    del session
    gc.collect()
    pump(client, server)
    exchange(client, server)


@pytest.mark.parametrize("order", ["server-first", "client-first"])
def test_connections_never_closed(pems, order):
    cctx, sctx = client_ctx(pems), server_ctx(pems)
    for i in range(200):
        client = fasttls.newtls("client", cctx, "localhost")
        server = fasttls.newtls("server", sctx)
        pump(client, server)
        exchange(client, server, b"x" * (i * 50 + 1))
        if i % 3 == 0:
            client.write(b"never read by the server")  # ciphertext nobody takes
        if order == "server-first":
            del server, client
        else:
            del client, server
    gc.collect()


def test_abandoned_handshakes(pems):
    cctx, sctx = client_ctx(pems), server_ctx(pems)
    for step in range(4):
        for partial in (False, True):
            client = fasttls.newtls("client", cctx, "localhost")
            server = fasttls.newtls("server", sctx)
            data, ends = client.handshake(), [server, client]
            for k in range(step):
                data = ends[k % 2].handshake(data)
            if partial and data:
                # half a flight: the receiver holds a partial record when it is dropped
                ends[step % 2].handshake(data[: len(data) // 2])
            del client, server, ends
    # a client that never even sent its ClientHello, and a server that never saw one
    fasttls.newtls("client", cctx, "localhost")
    fasttls.newtls("server", sctx)
    gc.collect()


def test_failed_connections_dropped(pems):
    sctx = server_ctx(pems)
    for garbage in (b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.1\r\n\r\n", b"\x15\x03\x03\x00\x02\x02\x28"):
        server = fasttls.newtls("server", sctx)
        with pytest.raises(fasttls.SSLError) as info:
            server.handshake(garbage)
        del server
        gc.collect()
        assert isinstance(info.value.alert, bytes)  # the exception outlives its connection
    client = fasttls.newtls("client", client_ctx(pems), "wrong.example")
    server = fasttls.newtls("server", sctx)
    with pytest.raises(fasttls.SSLCertVerificationError):
        pump(client, server)
    del client, server
    gc.collect()


def test_cycles_collected_in_any_order(pems):
    """Context <-> sni_callback <-> connection cycles: the collector clears them in an order of
    its own choosing, so a context may be torn down before its connections."""
    refs = []
    for i in range(50):
        sctx = server_ctx(pems)
        other = server_ctx(pems, "other_")
        cctx = client_ctx(pems)
        keep = []

        def callback(tls, name, keep=keep, other=other, sctx=sctx, i=i):
            keep.append(tls)  # the context's callback refers to the connection
            return other if i % 2 else None

        sctx.sni_callback = callback
        client = fasttls.newtls("client", cctx, "localhost")
        server = fasttls.newtls("server", sctx)
        if i % 3 == 0:
            pump(client, server)
        elif i % 3 == 1:
            server.handshake(client.handshake())
        cycle = [sctx, other, cctx, client, server, keep]
        cycle.append(cycle)
        keep.append(cycle)
        refs += [weakref.ref(sctx), weakref.ref(server), weakref.ref(client)]
        del sctx, other, cctx, client, server, keep, cycle, callback
    gc.collect()
    gc.collect()
    assert all(r() is None for r in refs)


def test_sni_switched_connection_outlives_both_contexts(pems):
    sctx, other = server_ctx(pems), server_ctx(pems, "other_")
    sctx.sni_callback = lambda tls, name, other=other: other
    client = fasttls.newtls("client", client_ctx(pems, check_hostname=False,
                                                 verify_mode="none"), "other.example")
    server = fasttls.newtls("server", sctx)
    del sctx, other
    gc.collect()
    pump(client, server)
    assert client.getpeercert(True)
    gc.collect()
    exchange(client, server)


def test_freed_in_another_thread(pems):
    cctx, sctx = client_ctx(pems), server_ctx(pems)
    made = []
    for i in range(50):
        client = fasttls.newtls("client", cctx, "localhost")
        server = fasttls.newtls("server", sctx)
        if i % 2:
            pump(client, server)
        made.append((client, server))
    del client, server
    box = [made, cctx, sctx]
    del made, cctx, sctx

    def drop():
        box.clear()
        gc.collect()

    thread = threading.Thread(target=drop)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()


EXIT_SCRIPT = r"""
import gc, os, sys, threading, time
import fasttls

pems = {name: open(os.path.join(sys.argv[1], name + ".pem"), "rb").read()
        for name in ("ca", "chain", "key")}
mode = sys.argv[2]

def pump(client, server):
    to_server = client.handshake()
    for _ in range(20):
        to_client = server.handshake(to_server) if not server.finished() else b""
        if not client.finished():
            to_server = client.handshake(to_client)
        else:
            to_server = b""
            client.read(to_client)
        if client.finished() and server.finished() and not to_server:
            return

def contexts():
    sctx = fasttls.newctx()
    sctx.set_cert(pems["chain"], pems["key"])
    return fasttls.newctx(cadata=pems["ca"]), sctx

CCTX, SCTX = contexts()
LIVE = []
for i in range(30):
    c = fasttls.newtls("client", CCTX, "localhost")
    s = fasttls.newtls("server", SCTX)
    if i % 3 == 0:
        pump(c, s)
        c.write(b"unsent data")
    elif i % 3 == 1:
        s.handshake(c.handshake())
    LIVE.append((c, s))
SESSION = LIVE[0][0].session

# the drop-in layer too: SSLObjects before, during and after their handshake
import ssl
DROPIN_CLIENT = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
DROPIN_CLIENT.load_verify_locations(os.path.join(sys.argv[1], "ca.pem"))
DROPIN_SERVER = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
DROPIN_SERVER.load_cert_chain(os.path.join(sys.argv[1], "chain.pem"),
                              os.path.join(sys.argv[1], "key.pem"))
for steps in range(4):
    bios = [ssl.MemoryBIO() for _ in range(4)]
    c = DROPIN_CLIENT.wrap_bio(bios[0], bios[1], server_hostname="localhost")
    s = DROPIN_SERVER.wrap_bio(bios[2], bios[3], server_side=True)
    for _ in range(steps):
        for obj, out, into in ((c, bios[1], bios[2]), (s, bios[3], bios[0])):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            into.write(out.read())
    LIVE.append((c, s, bios))

# a cycle through a context's sni_callback, left for the final collection
cycle_ctx = contexts()[1]
cycle_ctx.sni_callback = lambda tls, name, keep=[cycle_ctx]: None
cycle_tls = fasttls.newtls("server", cycle_ctx)
del cycle_ctx, cycle_tls

if mode == "finalizer":
    class Closer:
        # a wrapper in a reference cycle whose finalizer still uses its connection while the
        # interpreter shuts down
        def __init__(self, tls):
            self.tls, self.me = tls, self
        def __del__(self):
            self.tls.close()
            self.tls.write()
    CLOSERS = [Closer(pair[0]) for pair in LIVE if isinstance(pair[0], fasttls.TLS)]
    gc.disable()

if mode == "threads":
    # daemon threads still making connections when the interpreter exits
    started = threading.Barrier(5)
    def churn():
        cctx, sctx = contexts()
        started.wait()
        while True:
            c = fasttls.newtls("client", cctx, "localhost")
            s = fasttls.newtls("server", sctx)
            pump(c, s)
            s.read(c.write(b"x" * 5000))
    for _ in range(4):
        threading.Thread(target=churn, daemon=True).start()
    started.wait()
    time.sleep(0.2)
elif mode == "no-gc":
    gc.disable()
print("exiting")
"""


@pytest.mark.parametrize("mode", ["plain", "no-gc", "threads", "finalizer"])
def test_interpreter_exit_with_live_objects(pems, tmp_path, mode):
    for name in ("ca", "chain", "key"):
        (tmp_path / f"{name}.pem").write_bytes(pems[name])
    script = tmp_path / "exit_script.py"
    script.write_text(EXIT_SCRIPT)
    for attempt in range(5 if mode == "threads" else 1):  # exit races: try a few times
        proc = subprocess.run([sys.executable, str(script), str(tmp_path), mode],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
        assert proc.stderr == ""
        assert proc.stdout == "exiting\n"


FINALIZER_SCRIPT = r"""
import gc, os, sys
import fasttls

pems = {name: open(os.path.join(sys.argv[1], name + ".pem"), "rb").read()
        for name in ("ca", "chain", "key")}
sctx = fasttls.newctx()
sctx.set_cert(pems["chain"], pems["key"])
cctx = fasttls.newctx(cadata=pems["ca"])

class Connection:
    # an application's wrapper that closes its connection when it is finalized
    def __init__(self, tls):
        self.tls = tls
        self.me = self  # in a reference cycle, so the garbage collector finalizes it
    def __del__(self):
        self.tls.close()
        self.tls.write()

for i in range(100):
    client = fasttls.newtls("client", cctx, "localhost")
    server = fasttls.newtls("server", sctx)
    data = client.handshake()
    while not (client.finished() and server.finished()):
        data = server.handshake(data) if not server.finished() else b""
        data = client.handshake(data) if not client.finished() else b""
    Connection(client)
    Connection(server)
    del client, server
    gc.collect()
print("done")
"""


def test_finalizer_of_a_cycle_still_uses_its_connection(pems, tmp_path):
    """PEP 442: the finalizers of all objects in an unreachable cycle run before anything is
    freed, and each must leave its object usable. A wrapper whose __del__ closes its TLS
    connection, in a cycle, must not find the connection's engine already freed."""
    for name in ("ca", "chain", "key"):
        (tmp_path / f"{name}.pem").write_bytes(pems[name])
    script = tmp_path / "finalizer_script.py"
    script.write_text(FINALIZER_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert proc.stdout == "done\n"


def _dropin_pair(pems, tmp_path):
    import ssl

    (tmp_path / "ca.pem").write_bytes(pems["ca"])
    (tmp_path / "cert.pem").write_bytes(pems["chain"] + pems["key"])
    client_ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(str(tmp_path / "ca.pem"))
    server_ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(tmp_path / "cert.pem"))
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname="localhost")
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    return client, server, bios


def _dropin_steps(client, server, bios, steps):
    import ssl

    for _ in range(steps):
        for obj, out, into in ((client, bios[1], bios[2]), (server, bios[3], bios[0])):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            into.write(out.read())


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_dropin_objects_freed_in_any_order(pems, tmp_path, steps):
    """The same through the drop-in layer: SSLObjects whose contexts went first, handshakes
    abandoned at each step, finished connections never unwrapped."""
    for order in range(3):
        client, server, bios = _dropin_pair(pems, tmp_path)
        _dropin_steps(client, server, bios, steps)
        if steps == 3:
            client.write(b"never read")
        objects = [client, server, bios, client.context, server.context]
        del client, server, bios
        if order == 0:
            del objects[3:]  # the contexts first
        elif order == 1:
            objects.reverse()
        objects.append(objects)  # a cycle for the collector
        del objects
        gc.collect()
