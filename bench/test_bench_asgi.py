"""uvicorn over TLS in a child process under wrk, keep-alive and one handshake per request:
fasttls injected with fasttls.aio installed against plain uvicorn (``python -m fasttls bench``'s
uvicorn rows). Each round is a fixed-time wrk run, so compare ``extra_info["rate"]``
(requests/s), not the times. Needs uvicorn, fasttls.aio and wrk (skips without them, fails
under CI=true)."""
import pytest

from fasttls.bench import SIDES


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("name", ["uvicorn_keepalive", "uvicorn_close"])
def test_uvicorn(run_row, name, side):
    run_row(name, side, rounds=3)
