"""Fixtures of the interop matrix (tests/interop): its certificates, the blobs a transfer cell
moves, and what some peers need to run (an LD_PRELOAD shim, node). The rules every test here
follows, and the helpers, are in tests/support/interop.py."""
import hashlib
import os
import subprocess

import pytest

from support.interop import BLOB_SIZE, PKI, PROCESS_TIMEOUT, SMALL_TRANSFER
from support.requires import require_program


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def blobs(tmp_path_factory):
    """{size: (path, sha256)}: random bytes in files all named blob.bin (one directory each,
    which servers use as their document root), 16 MiB and 1 MiB."""
    data = os.urandom(BLOB_SIZE)
    result = {}
    for size in (BLOB_SIZE, SMALL_TRANSFER.size):
        path = tmp_path_factory.mktemp(f"blob{size}") / "blob.bin"
        path.write_bytes(data[:size])
        result[size] = path, hashlib.sha256(data[:size]).hexdigest()
    return result


@pytest.fixture
def blob(blobs, cell):
    """The blob of the current cell's size."""
    return blobs[cell.size]


@pytest.fixture(scope="session")
def loopback_shim(tmp_path_factory):
    """An LD_PRELOAD library that makes a program's wildcard binds loopback-only: IPv4
    INADDR_ANY becomes 127.0.0.1, IPv6 binds fail. gnutls-serv has no listen-address option
    and would otherwise listen on every interface."""
    gcc = require_program("gcc")
    directory = tmp_path_factory.mktemp("shim")
    source = directory / "loopback.c"
    source.write_text(r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind)
        real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET6) {
        errno = EADDRNOTAVAIL;
        return -1;
    }
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in copy;
        memcpy(&copy, addr, sizeof copy);
        copy.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return real_bind(fd, (const struct sockaddr *)&copy, sizeof copy);
    }
    return real_bind(fd, addr, len);
}
""")
    library = directory / "libloopback.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"],
                   check=True, timeout=PROCESS_TIMEOUT)
    return library


@pytest.fixture(scope="session")
def node():
    return require_program("node")
