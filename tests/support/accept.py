"""The accept loop of the threaded test servers: a listener on 127.0.0.1 with a short timeout,
so the loop notices its stop event, and a loop that hands each accepted socket on."""
import socket

ACCEPT_TIMEOUT = 0.2  # how long stop() can wait for the loop to notice
MAX_ROUNDS = 100000  # bounded: 0.2 s per idle round is over five hours


def local_listener():
    """A listening socket on 127.0.0.1, on a free port, whose accept() times out."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(ACCEPT_TIMEOUT)
    return listener


def accept_until(listener, stop, handle, rounds=MAX_ROUNDS):
    """Accept on `listener` until `stop` (a threading.Event) is set or the listener is closed
    (accept raising OSError), calling handle(sock) for each connection in this thread;
    `handle` owns the socket. At most `rounds` accepts, idle or not."""
    for _ in range(rounds):
        if stop.is_set():
            return
        try:
            sock, _ = listener.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        handle(sock)
