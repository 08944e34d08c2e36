"""Accepted messages per second over HTTPS with mutual TLS, N concurrent clients, bounded time.

Starts ``guichet serve`` (``--replicas`` processes of one hub, on their own ports, sharing the
data dir and the store: ``--store``, default the embedded SQLite file of a fresh data dir; a
PostgreSQL address gets a fresh schema for the run, dropped afterwards), then N keep-alive mTLS
connections, spread round-robin over the replicas (a stand-in for a load balancer), post the
portal's ``application.submitted`` (each with its own message id) as fast as the hub answers, for
``--seconds``. Counts 202s; latency is per request. Deliveries are paused
(``GUICHET_DELIVERY_WORKERS=0``): this measures the accepting path alone. The load generator runs
on the same machine as the hub and shares its cores.
Last line: ``http_msgs_per_s=<n> p50_ms=<a> p99_ms=<b>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hubs import (
    cpu_seconds,
    hub_settings,
    init_pki,
    own_cpu_seconds,
    percentile,
    run_store,
    serve,
    store_label,
    store_pids,
)

from gateway import jws
from gateway.signing import SigningKey

HOME = Path(__file__).resolve().parents[1]
EXAMPLE = HOME / "examples" / "be-platform" / "application.submitted.json"


@dataclass
class Tally:
    """What the clients saw; ``budget``: how many messages in all (None: until the time is up)."""

    stop_at: float
    budget: int | None = None
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def take(self) -> bool:
        if time.monotonic() >= self.stop_at:
            return False
        if self.budget is not None and self.sent >= self.budget:
            return False
        self.sent += 1
        return True

    @property
    def accepted(self) -> int:
        return self.statuses.get(202, 0)


async def client(
    ctx: ssl.SSLContext,
    port: int,
    template: dict[str, object],
    tally: Tally,
    signer: SigningKey,
) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    header = template["header"]
    assert isinstance(header, dict)
    try:
        while tally.take():
            header["messageId"] = str(uuid.uuid4())
            # Each application opens a case of its own, as employers' filings do: one case for
            # all would make every delivery wait for the one before (in order per case).
            header["caseReference"] = f"SP-BENCH-{header['messageId']}"
            body = json.dumps(template).encode()
            # Signed as the hub requires (a detached JWS, as a back office signs each message).
            signature = jws.sign_detached(body, signer).encode()
            request = (
                b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nX-JWS-Signature: "
                + signature
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            tally.latencies.append(time.perf_counter() - started)
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
    finally:
        writer.close()


async def load(
    pki: Path, ports: Sequence[int], clients: int, seconds: float, budget: int | None = None
) -> Tally:
    """``clients`` connections, client i to ``ports[i % len(ports)]``, for ``seconds`` or until
    ``budget`` messages have been sent."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(pki / "be-platform.pem", pki / "be-platform.key")
    template = json.loads(EXAMPLE.read_bytes())
    signer = SigningKey.from_files(pki / "be-platform.pem", pki / "be-platform.key")
    tally = Tally(time.monotonic() + seconds, budget)
    await asyncio.gather(
        *(
            client(ctx, ports[i % len(ports)], json.loads(json.dumps(template)), tally, signer)
            for i in range(clients)
        )
    )
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--store", default=None, metavar="URL", help="postgresql://… (default: SQLite)"
    )
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args(argv)
    settings = hub_settings(delivery_workers="0")
    with tempfile.TemporaryDirectory(prefix="guichet-load-") as scratch:
        data = Path(scratch)
        pki = init_pki(data)
        with (
            run_store(args.store, data) as store,
            serve(data, store, args.replicas, settings) as hubs,
        ):
            pids = hubs.pids
            backends = store_pids(store)
            hub_cpu, own_cpu = cpu_seconds(pids), own_cpu_seconds()
            db_cpu = cpu_seconds(backends)
            started = time.monotonic()
            tally = asyncio.run(load(pki, hubs.ports, args.clients, args.seconds))
            elapsed = time.monotonic() - started
            hub_cpu, own_cpu = cpu_seconds(pids) - hub_cpu, own_cpu_seconds() - own_cpu
            db_cpu = cpu_seconds(backends) - db_cpu
    latencies = sorted(tally.latencies)
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    print(
        f"{args.clients} clients, {args.replicas} replica(s), {store_label(args.store)},"
        f" {elapsed:.1f} s, statuses {dict(sorted(tally.statuses.items()))}"
    )
    # CPU per accepted message: steadier than the rate on a shared, noisy machine.
    per = 1000 / max(tally.accepted, 1)
    print(
        f"hub_cpu_ms_per_msg={hub_cpu * per:.2f} client_cpu_ms_per_msg={own_cpu * per:.2f}"
        + (f" postgres_cpu_ms_per_msg={db_cpu * per:.2f}" if backends else "")
        + f" (hub processes used {hub_cpu / elapsed:.2f} cores)"
    )
    print(f"http_msgs_per_s={tally.accepted / elapsed:.1f} p50_ms={p50:.2f} p99_ms={p99:.2f}")
    return 0 if tally.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
