"""Every row of ``python -m fasttls bench`` by name, in the order the table shows them: the core
workloads, the drop-in ones, fasttls.aio's, the anyio/trio path, uvicorn under wrk, then the
fleet behind haproxy."""
from typing import Dict, List, Optional, Sequence

from fasttls.bench import aio_rows, anyio_rows, asgi, dropin, fleet_rows, workloads
from fasttls.bench.harness import Row

ROWS: Dict[str, Row] = {row.name: row for row in (
    workloads.ROWS + dropin.ROWS + aio_rows.ROWS + anyio_rows.ROWS + asgi.ROWS + fleet_rows.ROWS)}


def default_rows() -> List[str]:
    """Every row whose optional requirement (e.g. requests) is installed."""
    return [name for name, row in ROWS.items() if row.available()]


def select_rows(names: Optional[Sequence[str]]) -> List[Row]:
    """The rows called `names` (default: default_rows()); ValueError names any unknown one."""
    names = list(names) if names else default_rows()
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        raise ValueError(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    return [ROWS[name] for name in names]
