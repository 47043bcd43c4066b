"""Session-ticket keys shared by a fleet: checking them and reading nginx's key files.

The format is nginx's `ssl_session_ticket_key`: a key is 80 bytes (16-byte name, 32-byte
HMAC-SHA256 secret, 32-byte AES-256-CBC key) or 48 bytes (16-byte name, 16-byte AES-128-CBC key,
16-byte HMAC secret), e.g. made with `openssl rand 80 > ticket.key`. The engine
(csrc/fasttls_tickets.c) does the per-handshake work; this module only prepares its input."""
import os
from typing import Iterable, List, Sequence, Tuple, Union

__all__ = ["KEY_LENGTHS", "TicketKeys", "pack_keys", "read_key_files", "wipe"]

KEY_LENGTHS = (80, 48)
KeyPath = Union[str, bytes, "os.PathLike[str]"]
TicketKeys = Iterable[Union[bytes, bytearray, memoryview]]


def _check_length(length: int, what: str) -> None:
    if length not in KEY_LENGTHS:
        raise ValueError(f"{what} is {length} bytes; a session ticket key is 80 bytes (AES-256, "
                         "nginx's format since 1.11.8) or 48 bytes (AES-128)")


def pack_keys(keys: TicketKeys) -> Tuple[bytearray, List[int]]:
    """All keys one after the other in a bytearray (the caller wipes it after use), and each
    one's length. TypeError for a lone key instead of a list of them."""
    if isinstance(keys, (bytes, bytearray, memoryview, str)):
        raise TypeError("session ticket keys are a list of keys, the current one first "
                        "(e.g. [key]), not a single key")
    packed = bytearray()
    lengths: List[int] = []
    try:
        for i, key in enumerate(keys):
            if not isinstance(key, (bytes, bytearray, memoryview)):
                raise TypeError(f"session ticket key {i} is a {type(key).__name__}, not bytes")
            raw = memoryview(key).cast("B")
            _check_length(raw.nbytes, f"session ticket key {i}")
            packed += raw
            lengths.append(raw.nbytes)
    except BaseException:
        wipe(packed)
        raise
    return packed, lengths


def read_key_files(paths: Union[KeyPath, Sequence[KeyPath]]) -> Tuple[bytearray, List[int]]:
    """The keys in these files (one key per file, as nginx's ssl_session_ticket_key: the first
    file holds the current key), packed as pack_keys does. OSError (with the file name) for a
    file that cannot be read; ValueError for one that is not 80 or 48 bytes."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    packed = bytearray()
    lengths: List[int] = []
    try:
        for path in paths:
            name = os.fsdecode(path)
            with open(path, "rb") as f:
                # Read into a bytearray the caller wipes, never into an immutable bytes object,
                # and one byte more than the longest key, to tell a longer file from a key.
                chunk = bytearray(max(KEY_LENGTHS) + 1)
                try:
                    size = f.readinto(chunk)
                    if size > max(KEY_LENGTHS):  # say how long the file really is
                        size = max(size, os.fstat(f.fileno()).st_size)
                    _check_length(size, f"the session ticket key file {name!r}")
                    packed += memoryview(chunk)[:size]
                finally:
                    wipe(chunk)
            lengths.append(size)
    except BaseException:
        wipe(packed)
        raise
    if not lengths:
        raise ValueError("no session ticket key file given")
    return packed, lengths


def wipe(buffer: bytearray) -> None:
    """Overwrite key material held in a bytearray (Python bytes objects cannot be wiped)."""
    buffer[:] = bytes(len(buffer))
