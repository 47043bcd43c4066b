"""How the servers of a fleet share resumption state: one class per mode, chosen by name.

A mode has two halves:

* in the harness process, an instance (`sharing(name, workdir)`): what to tell each server
  process (`server_config()`, JSON), what changes between reloads (`rotate()` for ticket keys),
  and a model of which returning connection should resume (`expect()`), so a run can tell a
  resumption lost to a rotated-out key from any other loss;
* in each server process, `apply(ctx, config)`: configure the server context at start and again
  on every reload (SIGHUP);
* `start()`/`stop()` around the fleet's life, for what a mode runs itself (a store's server).

Modes: "tickets" (shared session-ticket keys, nginx's key files), "redis" (a shared Redis
session store, optionally sealed: store_sharing.py), "none" (each server its own
key: the baseline). Another mode plugs in the same way: register it in MODES.
"""
import os
import tempfile
from typing import Any, Dict, List, Type

__all__ = ["MODES", "Sharing", "NoSharing", "RotatingKeyFiles", "TicketKeySharing",
           "ClientState", "sharing", "apply_config"]

TLS13 = "TLSv1.3"


class ClientState:
    """What a mode's model remembers about one returning client's ticket: which key it is under
    ("tickets"), or which server issued it ("none"). None before its first connection."""

    __slots__ = ("ticket",)

    def __init__(self) -> None:
        self.ticket: Any = None


class Sharing:
    """A way for servers to share state. Subclasses set `name` and implement the rest."""

    name = ""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.generation = 0  # how many reloads the servers were told to do

    def start(self) -> None:
        """Before the servers start: bring up what the mode needs (a store's server, say)."""

    def stop(self) -> None:
        """After the servers stopped: tear that down (called even if start() failed)."""

    def server_config(self) -> Dict[str, Any]:
        """Handed to every server process (as JSON) for apply()."""
        return {}

    @staticmethod
    def apply(ctx: Any, config: Dict[str, Any]) -> None:
        """In a server process: configure `ctx` (a fasttls.SSLContext) from `config`, at start
        and on each reload."""

    def expect(self, state: ClientState, server: str, generation: int, version: str) -> bool:
        """Whether a returning client with `state` should resume on `server`, which is at
        reload `generation`; updates `state` to the ticket it holds afterwards."""
        raise NotImplementedError


class NoSharing(Sharing):
    """Each server encrypts tickets with a random key of its own process: a ticket resumes only
    on the server that issued it. The baseline the shared modes are measured against."""

    name = "none"

    def expect(self, state: ClientState, server: str, generation: int, version: str) -> bool:
        resumes = state.ticket == server
        state.ticket = server  # a full handshake's new ticket, or the same server's renewal
        return resumes


class RotatingKeyFiles(Sharing):
    """A mode whose servers load keys from files, one key per file, the current key's file
    first, and reload them on SIGHUP; subclasses say what a key is (`SECRET_BYTES`, `_encode`)
    and name the files (`FILE_STEM`).

    Rotation is two-phase because the servers of a fleet do not reload at the same instant:
    the new key is first added as a decrypt-only key everywhere (stage_next_key), and only once
    every server has it does it become the current key (promote_next_key). Done in one step, a
    client given a ticket or session under the new key by a server that has reloaded would get
    a full handshake from one that has not yet. Keys older than `keep` rotations are dropped:
    what is still under them (clients away that long) gets a full handshake, which the model
    counts as lost to rotation."""

    SLOTS = 3  # key files: current, then up to two more (the next key, or previous ones)
    FILE_STEM = ""
    SECRET_BYTES = 0

    def __init__(self, workdir: str, keep: int = 1) -> None:
        super().__init__(workdir)
        self.keep = keep
        self.paths = [os.path.join(workdir, f"{self.FILE_STEM}.{i}.key")
                      for i in range(self.SLOTS)]
        self.key_ids = 0
        # The keys of each generation (ids, current first); generation 0 is the start.
        self.key_sets: List[List[Any]] = []
        self._secrets: Dict[int, bytes] = {}

    @staticmethod
    def _encode(secret: bytes) -> bytes:
        """A key file's content."""
        return secret

    def _new_key(self) -> int:
        self.key_ids += 1
        self._secrets[self.key_ids] = os.urandom(self.SECRET_BYTES)
        return self.key_ids

    def _write(self, ids: List[int]) -> None:
        """Write the key files for `ids` (current first; the last key repeats in unused
        slots), each atomically: a server reloading meanwhile reads the old or the new key,
        never half of one."""
        assert 0 < len(ids) <= self.SLOTS
        padded = ids + [ids[-1]] * (self.SLOTS - len(ids))
        for key_id, path in zip(padded, self.paths):
            fd, tmp = tempfile.mkstemp(dir=self.workdir, prefix=f".{self.FILE_STEM}-")
            try:
                os.write(fd, self._encode(self._secrets[key_id]))
            finally:
                os.close(fd)
            os.replace(tmp, path)
        self.key_sets.append(list(ids))

    def current_keys(self) -> List[Any]:
        return self.key_sets[-1]

    def stage_next_key(self) -> None:
        """Phase one: a new key, accepted everywhere, not yet used for new tickets or
        sessions."""
        current = self.current_keys()
        self._write([current[0], self._new_key()] + current[1:self.keep + 1])
        self.generation += 1

    def promote_next_key(self) -> None:
        """Phase two: the staged key becomes current; the old current one stays as previous
        (and older ones beyond `keep` are dropped)."""
        current = self.current_keys()
        assert len(current) >= 2, "stage_next_key first"
        self._write([current[1], current[0]] + current[2:self.keep + 1])
        self.generation += 1

    def replace_all_keys(self) -> None:
        """Not a rotation: every key replaced at once (a compromised key, say). Everything in
        the fleet is then under a dropped key."""
        self._write([self._new_key()])
        self.generation += 1


class TicketKeySharing(RotatingKeyFiles):
    """Session-ticket keys in nginx-format key files (80 bytes) that every server loads
    (`Context.load_session_ticket_keys`), rotated in two phases (RotatingKeyFiles)."""

    name = "tickets"
    FILE_STEM = "ticket"
    SECRET_BYTES = 80

    def __init__(self, workdir: str, keep: int = 1) -> None:
        super().__init__(workdir, keep)
        self._write([self._new_key()])

    def server_config(self) -> Dict[str, Any]:
        return {"ticket_key_files": list(self.paths)}

    @staticmethod
    def apply(ctx: Any, config: Dict[str, Any]) -> None:
        ctx.load_session_ticket_keys(config["ticket_key_files"])

    def expect(self, state: ClientState, server: str, generation: int, version: str) -> bool:
        keys = self.key_sets[generation]
        resumes = state.ticket in keys
        # A new ticket comes with a full handshake, with every TLS 1.3 resumption, and with a
        # TLS 1.2 resumption under a key that is not the current one.
        if not resumes or version == TLS13 or state.ticket != keys[0]:
            state.ticket = keys[0]
        return resumes


MODES: Dict[str, Type[Sharing]] = {cls.name: cls for cls in (NoSharing, TicketKeySharing)}


def sharing(mode: str, workdir: str, **options: Any) -> Sharing:
    """The mode called `mode`; ValueError naming the modes there are."""
    try:
        cls = MODES[mode]
    except KeyError:
        raise ValueError(f"unknown fleet sharing mode {mode!r}; choose from "
                         f"{', '.join(MODES)}") from None
    return cls(workdir, **options)


def apply_config(mode: str, ctx: Any, config: Dict[str, Any]) -> None:
    """In a server process: the mode's apply()."""
    MODES[mode].apply(ctx, config)

# The session-store mode subclasses Sharing: registered once this module is complete.
from fasttls.bench.fleet.store_sharing import RedisStoreSharing  # noqa: E402

MODES[RedisStoreSharing.name] = RedisStoreSharing
