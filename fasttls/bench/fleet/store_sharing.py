"""Fleet sharing mode "redis": the servers keep sessions in one Redis server (fasttls.store),
optionally sealed under fleet keys that rotate like ticket keys.

The harness process runs redis-server itself (start(): a free 127.0.0.1 port, no persistence;
stop() kills it). Each server process sets `RedisStore(url)` as its context's session store,
wrapped in a `SealedStore` over the key files when sealing is on; a reload (SIGHUP) reads the
key files again. Rotation is two-phase for the same reason as ticket keys (servers reload one
after another): the new key is first accepted everywhere, then becomes the sealing key.

The model: a returning client resumes if it holds a session and (sealed) the key its session
was sealed under is still listed. Every full handshake and every TLS 1.3 resumption stores new
sessions sealed under the current key; a TLS 1.2 resumption stores nothing, so the session stays
under the key it was first sealed with."""
import shutil
import socket
import subprocess
import time
from typing import Any, Dict, List, Optional

from fasttls.bench.fleet.sharing import ClientState, RotatingKeyFiles

__all__ = ["RedisStoreSharing"]

START_TIMEOUT = 10.0
TLS13 = "TLSv1.3"
UNSEALED = "unsealed"  # the model's "key" of sessions stored in the clear


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisStoreSharing(RotatingKeyFiles):
    """Sessions in one Redis; sealing keys (32 bytes, in hex) in key files rotated in two
    phases (RotatingKeyFiles)."""

    name = "redis"
    FILE_STEM = "seal"
    SECRET_BYTES = 32

    def __init__(self, workdir: str, seal: bool = False, keep: int = 1,
                 redis_server: str = "redis-server") -> None:
        super().__init__(workdir, keep)
        self.seal = seal
        self.redis_server = redis_server
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        if seal:
            self._write([self._new_key()])
        else:
            self.key_sets.append([UNSEALED])

    # ---- the store's server

    def start(self) -> None:
        program = shutil.which(self.redis_server)
        if program is None:
            raise RuntimeError(f"fleet mode 'redis' needs {self.redis_server!r} (Debian: "
                               f"redis-server)")
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [program, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server is not listening after {START_TIMEOUT} s")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(START_TIMEOUT)
            self.proc = None

    # ---- the servers' configuration

    def server_config(self) -> Dict[str, Any]:
        return {"redis_url": f"redis://127.0.0.1:{self.port}/0",
                "seal_key_files": list(self.paths) if self.seal else []}

    @staticmethod
    def apply(ctx: Any, config: Dict[str, Any]) -> None:
        from fasttls.store import RedisStore, SealedStore, SealingKey
        store: Any = RedisStore(config["redis_url"], timeout=2.0)
        if config.get("seal_key_files"):
            keys: List[Any] = []
            for path in config["seal_key_files"]:
                key = SealingKey.from_file(path)
                if all(k.key_id != key.key_id for k in keys):  # unused slots repeat the last
                    keys.append(key)
            store = SealedStore(store, keys)
        ctx.set_session_store(store)

    # ---- sealing keys: SealingKey.from_file reads 64 hex digits

    @staticmethod
    def _encode(secret: bytes) -> bytes:
        return secret.hex().encode("ascii")

    def expect(self, state: ClientState, server: str, generation: int, version: str) -> bool:
        keys = self.key_sets[generation if self.seal else 0]
        resumes = state.ticket is not None and state.ticket in keys
        if not resumes or version == TLS13:
            state.ticket = keys[0]
        return resumes
