"""A fasttls server in a process of its own, keeping sessions in Redis: for the fleet tests
(another process's sessions resume here, and the other way round).

    python store_server_process.py REDIS_PORT CHAIN_PEM KEY_PEM COUNT

Prints its port on the first line, serves COUNT connections on the socket helpers (b"ok" then
close_notify), prints one line per connection ("reused" or "new"), and exits (its accept
times out if the connections do not come)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fasttls
from fasttls.store import RedisStore
from support.stores import HelperServer


def main():
    redis_port, chain, key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ctx = fasttls.newctx()
    ctx.set_cert(chain, key)
    ctx.set_session_store(RedisStore(f"redis://127.0.0.1:{redis_port}/0", timeout=2.0))
    server = HelperServer(ctx, count=count)
    print(server.port, flush=True)
    server.join()
    ctx._session_store_saver.flush(10)
    for reused in server.reused:
        print("reused" if reused else "new", flush=True)
    for error in server.errors:
        print("error", error, flush=True)


if __name__ == "__main__":
    main()
