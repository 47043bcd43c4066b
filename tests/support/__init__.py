"""Plain helpers of the tests (fixtures live in the conftest.py files), importable as ``support``
because tests/ is on sys.path (pyproject's pytest ``pythonpath``; scripts add it themselves):

- ``pump``: the in-memory handshake of two fasttls TLS objects (no pytest: child scripts use it).
- ``pairs``: fasttls client/server pairs, the TLS versions every case runs on, failing handshakes.
- ``certs``: Identity, a trustme CA and leaf in the forms fasttls and the stdlib load.
- ``peers``: a stdlib SSLObject peer in memory; loopback sockets, socket handshakes and reads.
- ``requires``: IN_CI, and skipping (failing under CI=true) when a peer or library is missing.
- ``dropin``: the stdlib reference servers and clients of the drop-in tests and benchmarks.
- ``interop``: the interop matrix's cells, peer processes and fasttls endpoints.
- ``hostile``: the case runner and shared scenarios of tests/test_hostile_*.py;
  ``hostile_certs`` their certificates, ``records`` TLS records sealed under real keys.
- ``accept``: the bounded accept loop and 127.0.0.1 listener of the threaded test servers.
- ``loops``: the patched selector and uvloop event loops of the fasttls.aio tests.
- ``threads``: start many threads, join each within a bound.
"""
