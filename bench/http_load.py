"""Accepted messages per second over HTTPS with mutual TLS, N concurrent clients, bounded time.

Starts ``guichet serve`` as its own process on a fresh data dir (embedded SQLite), then N
keep-alive mTLS connections post the portal's ``application.submitted`` (each with its own message
id) as fast as the hub answers, for ``--seconds``. Counts 202s; latency is per request.
Deliveries are paused (``GUICHET_DELIVERY_WORKERS=0``): this measures the accepting path alone,
the outbox drains afterwards. Last line: ``http_msgs_per_s=<n> p50_ms=<a> p99_ms=<b>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HOME = Path(__file__).resolve().parents[1]
EXAMPLE = HOME / "examples" / "be-platform" / "application.submitted.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the hub exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the hub did not start listening")


async def client(
    ctx: ssl.SSLContext,
    port: int,
    template: dict[str, object],
    stop_at: float,
    latencies: list[float],
    statuses: dict[int, int],
) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    header = template["header"]
    assert isinstance(header, dict)
    try:
        while time.monotonic() < stop_at:
            header["messageId"] = str(uuid.uuid4())
            body = json.dumps(template).encode()
            request = (
                b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: "
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
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def load(
    pki: Path, port: int, clients: int, seconds: float
) -> tuple[int, list[float], dict[int, int]]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(pki / "be-platform.pem", pki / "be-platform.key")
    template = json.loads(EXAMPLE.read_bytes())
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = time.monotonic() + seconds
    await asyncio.gather(
        *(
            client(ctx, port, json.loads(json.dumps(template)), stop_at, latencies, statuses)
            for _ in range(clients)
        )
    )
    return statuses.get(202, 0), latencies, statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="guichet-load-") as scratch:
        data = Path(scratch)
        port = free_port()
        env = {**os.environ, "GUICHET_DELIVERY_WORKERS": "0", "GUICHET_LOG_LEVEL": "warning"}
        subprocess.run(
            [sys.executable, "-m", "gateway.cli", "certs", "init", "--dir", str(data / "pki")],
            cwd=HOME,
            env=env,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        hub = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--data-dir",
                str(data),
                "--port",
                str(port),
            ],
            cwd=HOME,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, hub)
            started = time.monotonic()
            accepted, latencies, statuses = asyncio.run(
                load(data / "pki", port, args.clients, args.seconds)
            )
            elapsed = time.monotonic() - started
        finally:
            hub.terminate()
            hub.wait(timeout=30)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
    p99 = (
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else 0.0
    )
    print(f"{args.clients} clients, {elapsed:.1f} s, statuses {dict(sorted(statuses.items()))}")
    print(f"http_msgs_per_s={accepted / elapsed:.1f} p50_ms={p50:.2f} p99_ms={p99:.2f}")
    return 0 if accepted else 1


if __name__ == "__main__":
    sys.exit(main())
