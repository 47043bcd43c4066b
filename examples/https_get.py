"""An HTTPS GET written like skynet's Lua HTTP client (http.tlshelper): usage
`python examples/https_get.py HOST [PORT] [PATH] [CAFILE]`."""
import socket
import sys

import fasttls


def https_get(host, port=443, path="/", cafile=None):
    ctx = fasttls.newctx(cafile=cafile) if cafile else fasttls.newctx()  # system CAs by default
    sock = socket.create_connection((host, port), timeout=10)
    tls = fasttls.newtls("client", ctx, host)
    init = fasttls.init_requestfunc(sock, tls)
    write = fasttls.writefunc(sock, tls)
    readall = fasttls.readallfunc(sock, tls)
    close = fasttls.closefunc(tls)
    try:
        init()
        write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return readall()
    finally:
        close()
        sock.close()


if __name__ == "__main__":
    host = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 443
    path = sys.argv[3] if len(sys.argv) > 3 else "/"
    cafile = sys.argv[4] if len(sys.argv) > 4 else None
    sys.stdout.buffer.write(https_get(host, port, path, cafile))
