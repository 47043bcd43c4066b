"""A tiny HTTPS server on the socket helpers: usage
`python examples/hello_server.py CERT.pem KEY.pem [PORT]` (one request per connection)."""
import socket
import sys

import fasttls


def serve(certfile, keyfile, port=8443, connections=None):
    ctx = fasttls.newctx(certfile=certfile, keyfile=keyfile)
    with socket.create_server(("127.0.0.1", port)) as listener:
        served = 0
        while connections is None or served < connections:
            sock, _ = listener.accept()
            sock.settimeout(10)
            tls = fasttls.newtls("server", ctx)
            read = fasttls.readfunc(sock, tls)
            write = fasttls.writefunc(sock, tls)
            try:
                fasttls.init_responsefunc(sock, tls)()
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = read()
                    if not chunk:
                        break
                    request += chunk
                body = b"hello from fasttls\n"
                write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                      % (len(body), body))
            except (OSError, fasttls.SSLError) as exc:  # one bad client must not stop the server
                print(f"connection failed: {exc}", file=sys.stderr)
            finally:
                fasttls.closefunc(tls)()
                sock.close()
                served += 1


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 8443)
