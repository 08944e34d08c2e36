"""Test support that ships with the product: the hub and its sandbox on loopback, log capture.

Integration tests and the demo run the real thing — HTTPS servers with mutual TLS on free loopback
ports, a real SQLite store — through :func:`running_hub`; crash tests run ``guichet serve`` as
processes of its own (:func:`start_hub_process`), which they kill, stop and start again.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway import authz
from gateway.certs import DevPki, TlsFiles, init_dev_pki, write_master_key
from gateway.config import HubConfig, Settings
from gateway.hub import Hub, configure_logging
from gateway.mapping import MappingSet
from gateway.sandbox import Sandbox
from gateway.service.app import create_app
from gateway.service.server import ServerThread
from gateway.service.tls import client_ssl_context
from gateway.signatures import SigningAuth
from gateway.signing import SigningKey

__all__ = [
    "HubProcess",
    "LogCapture",
    "RunningHub",
    "capture_logs",
    "ensure_pki",
    "free_port",
    "guichet_command",
    "running_hub",
    "signed_client",
    "start_hub_process",
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

    def client(self, party: str, *, sign: bool = True) -> httpx.Client:
        """An HTTPS client presenting the party's certificate (or a role's: ``"operator"``,
        ``"auditor"``); a party's client signs each message it POSTs, unless ``sign=False``."""
        identity = self.pki.role(party) if party in _ROLES else self.pki.party(party)
        return signed_client(self.url, identity, sign=sign)


_ROLES = (authz.OPERATOR.name, authz.AUDITOR.name)


def signed_client(
    base_url: str, identity: TlsFiles, *, sign: bool = True, timeout: float = 10.0
) -> httpx.Client:
    """An HTTPS client presenting ``identity``; with ``sign``, every message it POSTs is signed
    with that certificate's key (WS-Security on SOAP paths, a detached JWS otherwise)."""
    auth = SigningAuth(SigningKey.from_files(identity.cert, identity.key)) if sign else None
    return httpx.Client(
        base_url=base_url, verify=client_ssl_context(identity), timeout=timeout, auth=auth
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
            # Behind a proxy the hub listens plain HTTP (the proxy ends TLS).
            tls = None if config.settings.behind_proxy else pki.hub
            with ServerThread(create_app(hub), tls=tls) as server:
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


# -- hub processes ----------------------------------------------------------------------------

# The checkout this module was imported from: a hub process imports the same code.
_CHECKOUT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port free at the time of asking (the OS's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment(settings: Mapping[str, object] | None = None) -> dict[str, str]:
    """This process's environment without its ``GUICHET_*`` variables, plus ``settings`` as
    ``GUICHET_<NAME>``, with this checkout first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUICHET_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_CHECKOUT), os.environ.get("PYTHONPATH", "")) if p
    )
    for name, value in (settings or {}).items():
        env[f"GUICHET_{name.upper()}"] = str(value)
    return env


def guichet_command(
    *args: str, settings: Mapping[str, object] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``guichet ARGS`` (this checkout's) to its end, bounded; its output captured."""
    return subprocess.run(  # noqa: S603 - our own command, arguments from the caller's test
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=_CHECKOUT,
        env=_environment(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class HubProcess:
    """One ``guichet serve`` process on a loopback port; its output goes to ``log_path``.

    ``kill()`` is a crash (SIGKILL), ``terminate()`` an operator's stop (SIGTERM, then wait).
    """

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    pki: DevPki

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def client(self, party: str = "be-platform", *, timeout: float = 10.0) -> httpx.Client:
        """An HTTPS client of the hub presenting the party's certificate, signing what it
        POSTs."""
        return self.client_as(self.pki.party(party), timeout=timeout)

    def client_as(self, identity: TlsFiles, *, timeout: float = 10.0) -> httpx.Client:
        """An HTTPS client presenting ``identity`` (a party's, or a role's: ``pki.role(...)``),
        signing what it POSTs with that certificate's key."""
        return signed_client(self.url, identity, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once ``/healthz`` answers 200 to the operator's certificate; raise if the
        process exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        with self.client_as(self.pki.role("operator"), timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(
                        f"the hub exited with {self.process.returncode}:\n{self.log()[-3000:]}"
                    )
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the hub was not ready within {timeout} s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: the process dies at once, whatever it holds (bounded wait for its end)."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit; its status. Killed (and ``TimeoutError``) if it does
        not end within ``timeout`` seconds."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"the hub did not stop within {timeout} s after SIGTERM") from None

    def __enter__(self) -> HubProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


def start_hub_process(
    data_dir: Path,
    *,
    store: str | None = None,
    endpoints: Mapping[str, str] | None = None,
    settings: Mapping[str, object] | None = None,
    port: int | None = None,
    ready_timeout: float = 60.0,
) -> HubProcess:
    """Start ``guichet serve`` on ``data_dir`` (its ``pki/`` must exist: replicas share one) and
    wait until it is ready. ``store``: a store URL (default: the data dir's SQLite file);
    ``endpoints``: party → URL to deliver to; ``settings``: ``Settings`` fields, passed as
    ``GUICHET_*`` variables. The process's output is appended to ``data_dir/hub-<port>.log``."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(data_dir)]
    command += ["--port", str(port)]
    if store is not None:
        command += ["--store", store]
    for party, url in (endpoints or {}).items():
        command += ["--endpoint", f"{party}={url}"]
    log_path = data_dir / f"hub-{port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own command
            command,
            cwd=data_dir,  # no stray guichet.toml of the caller's folder
            env=_environment({"log_level": "info", **(settings or {})}),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    hub = HubProcess(process, port, data_dir, log_path, DevPki.at(data_dir / "pki"))
    hub.wait_ready(ready_timeout)
    return hub
