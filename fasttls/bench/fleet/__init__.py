"""The fleet demonstration (issue 9 section 5): fasttls server processes behind haproxy (TCP,
round robin) on 127.0.0.1, sharing resumption state, and returning clients counting how many of
their connections resume.

- `sharing`: the ways servers share state (modes "tickets" and "none"; a store plugs in there);
- `server`: one server process (`python -m fasttls.bench.fleet.server`);
- `harness`: `Fleet`, starting the servers and haproxy, reloads and ticket-key rotations;
- `clients`: returning clients and the tally of their connections.

    with Fleet("tickets", workdir, certfile, keyfile) as fleet:
        clients = [ReturningClient(i, stdlib_client_context(cert_pem)) for i in range(20)]
        tally = run_round(clients, fleet.address, fleet.sharing)      # first visits
        tally = run_round(clients, fleet.address, fleet.sharing)      # returning
        fleet.rotate_ticket_keys()
"""
from fasttls.bench.fleet.clients import ReturningClient, Tally, Visit, run_round, \
    stdlib_client_context
from fasttls.bench.fleet.harness import Fleet, FleetError
from fasttls.bench.fleet.sharing import MODES, Sharing, sharing

__all__ = ["Fleet", "FleetError", "MODES", "ReturningClient", "Sharing", "Tally", "Visit",
           "run_round", "sharing", "stdlib_client_context"]
