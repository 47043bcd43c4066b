"""Record real TLS flights from an in-memory fasttls client/server pair and write them as seed
inputs for fuzz/fuzz_tls.py, one directory per target under fuzz/corpus/.

    python fuzz/make_corpus.py            # (re)write fuzz/certs/ and fuzz/corpus/

The certificates (fuzz/certs/, test-only keys made by trustme) are written too, so the captured
flights carry the same certificates the harness trusts. Seeds use the harness's input format
(see the docstring of fuzz_tls.py): an options byte, then the flight (handshake targets) or a
list of operations (data and closed targets).
"""
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def write_certs():
    import trustme

    os.makedirs(os.path.join(HERE, "certs"), exist_ok=True)
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    files = {"ca.pem": ca.cert_pem.bytes()}
    for kind, key_type in (("ecdsa", trustme.KeyType.ECDSA), ("rsa", trustme.KeyType.RSA)):
        leaf = ca.issue_cert("localhost", key_type=key_type)
        files[f"{kind}-chain.pem"] = b"".join(b.bytes() for b in leaf.cert_chain_pems)
        files[f"{kind}-key.pem"] = leaf.private_key_pem.bytes()
    for name, blob in files.items():
        with open(os.path.join(HERE, "certs", name), "wb") as f:
            f.write(blob)


def main():
    if "--keep-certs" not in sys.argv or not os.path.exists(os.path.join(HERE, "certs", "ca.pem")):
        write_certs()
    import fuzz_tls as h  # the harness's own contexts and input format

    seeds = {target: [] for target in h.NATIVE_TARGETS}
    chunkings = (0, 1, 3, 4)  # whole flights, 1-byte, 7-byte and 64-byte chunks
    for version_bits in (0, 1, 2):  # default, TLS 1.2 only, TLS 1.3 only
        for key_bits in (0, 1):  # ECDSA, RSA server certificate
            options = version_bits | (key_bits << 5)
            client, server = h.new_pair(options)
            hello = client.handshake()
            flight = server.handshake(hello)
            reply = client.handshake(flight)
            for chunking in chunkings:
                opt = options | (chunking << 2)
                seeds["server_handshake"].append(bytes([opt]) + hello)
                seeds["client_handshake"].append(bytes([opt]) + flight)
            # the second flights too: fed to a fresh endpoint they are out of order
            seeds["server_handshake"].append(bytes([options]) + hello + reply)
            # finish the handshake, then record application data and alerts both ways
            h.finish(client, server, reply)
            c_data = [client.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
                      client.write(b"x" * 300), client.write(bytes(range(256)) * 20)]
            s_data = [server.write(b"HTTP/1.1 200 OK\r\n\r\nhello"), server.write(b"y" * 1000)]
            c_close, s_close = client.close(), server.close()
            for victim, records, close in (("server", c_data, c_close),
                                           ("client", s_data, s_close)):
                for stage in ("data", "closed"):
                    ops = b"".join(h.op_raw(r) for r in records) + h.op_raw(close)
                    seeds[f"{victim}_{stage}"].append(bytes([options]) + ops)
                    # genuine records made during the run, with one forged and one split
                    ops = (h.op(h.OP_PEER_DATA, 40) + h.op(h.OP_PEER_SPLIT, 3, 0, 7)
                           + h.op(h.OP_PEER_FLIP, 0, 9, 0x20) + h.op(h.OP_VICTIM_WRITE, 5)
                           + h.op(h.OP_PEER_CLOSE) + h.op_raw(records[0]))
                    seeds[f"{victim}_{stage}"].append(bytes([options | 0x80]) + ops)
                    ops = (h.op(h.OP_VICTIM_WRITE, 200) + h.op(h.OP_RELEASE)
                           + h.op(h.OP_PEER_DATA, 255) + h.op(h.OP_FLUSH)
                           + h.op(h.OP_VICTIM_CLOSE) + h.op(h.OP_PEER_DATA, 1)
                           + h.op_handshake(records[-1][:100]))
                    seeds[f"{victim}_{stage}"].append(bytes([options]) + ops)
    # the drop-in targets take the same input format: the same flights seed them
    for target in h.NATIVE_TARGETS:
        seeds["dropin_" + target] = list(seeds[target])
    for target, blobs in seeds.items():
        directory = os.path.join(HERE, "corpus", target)
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        for blob in blobs:
            name = hashlib.sha1(blob).hexdigest()
            with open(os.path.join(directory, name), "wb") as f:
                f.write(blob)
        print(f"{target}: {len(blobs)} seeds")


if __name__ == "__main__":
    main()
