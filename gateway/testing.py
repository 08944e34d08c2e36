"""Test support that ships with the product: the hub and its sandbox on loopback, log capture.

Integration tests and the demo run the real thing — HTTPS servers with mutual TLS on free loopback
ports, a real SQLite store — through :func:`running_hub`.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.certs import DevPki, init_dev_pki, write_master_key
from gateway.config import HubConfig, Settings
from gateway.hub import Hub, configure_logging
from gateway.mapping import MappingSet
from gateway.sandbox import Sandbox
from gateway.service.app import create_app
from gateway.service.server import ServerThread
from gateway.service.tls import client_ssl_context

__all__ = [
    "LogCapture",
    "RunningHub",
    "capture_logs",
    "ensure_pki",
    "running_hub",
    "wait_until",
]


@dataclass
class RunningHub:
    hub: Hub
    server: ServerThread
    sandbox: Sandbox
    pki: DevPki

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, party: str) -> httpx.Client:
        """An HTTPS client presenting the party's certificate."""
        return httpx.Client(
            base_url=self.url, verify=client_ssl_context(self.pki.party(party)), timeout=10
        )


def ensure_pki(config: HubConfig, directory: Path | None = None) -> DevPki:
    """The development PKI of the hub's parties in ``directory`` (default: the data dir's),
    written on first use."""
    directory = directory or config.pki_dir
    if (directory / "ca.pem").exists():
        pki = DevPki.at(directory)
        write_master_key(pki.payload_key)  # a PKI written before bodies were encrypted
        return pki
    return init_dev_pki(directory, config.parties.identities())


@contextmanager
def running_hub(
    data_dir: Path,
    *,
    respond: bool = True,
    sandbox: bool = True,
    pki: DevPki | None = None,
    **settings: object,
) -> Iterator[RunningHub]:
    """Hub (+ sandbox back offices) on loopback, over mutual TLS, with a data dir of their own.

    ``settings`` override :class:`Settings` fields (e.g. ``delivery_workers=0``).
    """
    config = HubConfig.load(Settings(data_dir=data_dir, **settings))  # type: ignore[arg-type]
    pki = pki or ensure_pki(config)
    parties = list(config.parties.parties) if sandbox else []
    mappings = MappingSet.load(config.home)  # the sandbox reads the parties' formats
    with Sandbox(mappings, pki, parties, config.home / "examples", respond=respond) as offices:
        hub = Hub.open(config, endpoints=offices.endpoints, pki=pki)
        try:
            with ServerThread(create_app(hub), tls=pki.hub) as server:
                offices.hub_url = server.url
                hub.start()
                yield RunningHub(hub, server, offices, pki)
        finally:
            hub.close()


@dataclass
class LogCapture:
    """Every JSON log line written while capturing."""

    stream: io.StringIO

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]


@contextmanager
def capture_logs(level: str = "debug") -> Iterator[LogCapture]:
    """Route the hub's structlog output into a buffer (the real JSON renderer, not a stub)."""
    stream = io.StringIO()
    configure_logging(level, stream)
    try:
        yield LogCapture(stream)
    finally:
        configure_logging("info")


def wait_until(condition: Callable[[], object], timeout: float = 20.0) -> bool:
    """Poll ``condition`` every 50 ms until it holds or ``timeout`` seconds pass (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())
