"""Mutual TLS end to end: real uvicorn servers on loopback, real httpx clients, the dev PKI."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.certs import DevPki, PartyIdentity, TlsFiles, identity_of, init_dev_pki
from gateway.service.server import ServerThread
from gateway.service.tls import client_certificate, client_ssl_context

pytestmark = pytest.mark.slow

PARTIES = (
    PartyIdentity("be-platform", "Plateforme belge", "0123456749"),
    PartyIdentity("nl-agency", "Agentschap", "0987654321"),
)
TIMEOUT = httpx.Timeout(5.0)


async def whoami(request: Request) -> JSONResponse:
    """Echo what the app can learn about its caller from the scope alone."""
    cert = client_certificate(request.scope)
    identity = identity_of(cert) if cert is not None else None
    tls = request.scope.get("extensions", {}).get("tls", {})
    return JSONResponse(
        {
            "kind": identity.kind if identity else None,
            "name": identity.name if identity else None,
            "subject": tls.get("client_cert_name"),
            "chain": len(tls.get("client_cert_chain", [])),
            "tls_version": tls.get("tls_version"),
            "client_port": request.scope["client"][1],
        }
    )


APP = Starlette(routes=[Route("/whoami", whoami)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("pki"), PARTIES)


@pytest.fixture(scope="module")
def hub(pki: DevPki) -> Iterator[ServerThread]:
    with ServerThread(APP, tls=pki.hub) as server:
        yield server


def client(files: TlsFiles) -> httpx.Client:
    return httpx.Client(verify=client_ssl_context(files), timeout=TIMEOUT)


def whoami_as(hub: ServerThread, files: TlsFiles) -> dict[str, object]:
    with client(files) as http:
        response = http.get(hub.url + "/whoami")
    response.raise_for_status()
    body: dict[str, object] = response.json()
    return body


def test_url_is_https_on_loopback(hub: ServerThread) -> None:
    assert hub.url == f"https://127.0.0.1:{hub.port}"


@pytest.mark.parametrize(
    ("who", "kind", "name"),
    [
        ("be-platform", "party", "be-platform"),
        ("nl-agency", "party", "nl-agency"),
        ("role:operator", "role", "operator"),
    ],
)
def test_app_sees_who_calls(hub: ServerThread, pki: DevPki, who: str, kind: str, name: str) -> None:
    files = pki.role(who.removeprefix("role:")) if who.startswith("role:") else pki.party(who)
    body = whoami_as(hub, files)
    assert (body["kind"], body["name"]) == (kind, name)
    assert body["chain"] == 1
    assert body["tls_version"] in (0x0303, 0x0304)


def test_subject_name_is_rfc4514(hub: ServerThread, pki: DevPki) -> None:
    body = whoami_as(hub, pki.party("nl-agency"))
    assert body["subject"] == "2.5.4.5=0987654321,O=Agentschap,CN=nl-agency"


def test_certificate_without_identity_reaches_the_app_as_nobody(
    hub: ServerThread, pki: DevPki
) -> None:
    # The hub's own certificate chains to the CA but names no party: the app decides to refuse.
    body = whoami_as(hub, pki.hub)
    assert body["kind"] is None
    assert body["subject"] == "O=Guichet,CN=guichet-hub"


def test_every_request_on_a_keep_alive_connection_carries_the_certificate(
    hub: ServerThread, pki: DevPki
) -> None:
    with client(pki.party("be-platform")) as http:
        bodies = [http.get(hub.url + "/whoami").json() for _ in range(5)]
    assert {body["client_port"] for body in bodies} == {bodies[0]["client_port"]}, "one connection"
    assert all(body["name"] == "be-platform" for body in bodies)


def test_client_without_certificate_is_refused(hub: ServerThread, pki: DevPki) -> None:
    anonymous = ssl.create_default_context(cafile=pki.ca_cert)
    with (
        httpx.Client(verify=anonymous, timeout=TIMEOUT) as http,
        pytest.raises(httpx.TransportError),
    ):
        http.get(hub.url + "/whoami")
    assert whoami_as(hub, pki.party("be-platform"))["name"] == "be-platform", "still serving"


def test_client_from_a_foreign_ca_is_refused(
    hub: ServerThread, pki: DevPki, tmp_path: Path
) -> None:
    foreign = init_dev_pki(tmp_path, PARTIES)
    # Same party id, but issued by another CA; it trusts the real hub, so only the hub can refuse.
    impostor = TlsFiles(
        cert=foreign.party("be-platform").cert,
        key=foreign.party("be-platform").key,
        ca=pki.ca_cert,
    )
    with client(impostor) as http, pytest.raises(httpx.TransportError):
        http.get(hub.url + "/whoami")
    assert whoami_as(hub, pki.party("nl-agency"))["name"] == "nl-agency", "still serving"


def test_client_refuses_a_hub_from_a_foreign_ca(hub: ServerThread, tmp_path: Path) -> None:
    foreign = init_dev_pki(tmp_path, PARTIES)
    with client(foreign.party("be-platform")) as http, pytest.raises(httpx.ConnectError):
        http.get(hub.url + "/whoami")


def test_plain_http_server_has_no_certificate() -> None:
    with ServerThread(APP) as server, httpx.Client(timeout=TIMEOUT) as http:
        assert server.url.startswith("http://127.0.0.1:")
        body = http.get(server.url + "/whoami").json()
    assert body["kind"] is None
    assert body["chain"] == 0


def test_stopped_server_frees_its_port(pki: DevPki) -> None:
    server = ServerThread(APP, tls=pki.hub)
    server.start()
    port = server.port
    server.stop()
    server.stop()  # idempotent
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.settimeout(5)
        probe.connect(("127.0.0.1", port))


def test_serve_forever_shuts_down_gracefully_on_sigterm(pki: DevPki, tmp_path: Path) -> None:
    # The CLI path: a real process and uvicorn's own signal handling.
    with socket.socket() as probe:  # a free port; tiny race, loopback only
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stopped = tmp_path / "stopped"
    closed = tmp_path / "closed"
    script = tmp_path / "serve.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import contextlib
            from pathlib import Path
            from starlette.applications import Starlette
            from gateway.certs import DevPki
            from gateway.service.server import serve_forever

            @contextlib.asynccontextmanager
            async def lifespan(app):
                yield
                Path({str(stopped)!r}).touch()  # reached only by a graceful shutdown

            hub = DevPki.at(Path({str(pki.directory)!r})).hub
            serve_forever(Starlette(lifespan=lifespan), "127.0.0.1", {port}, hub)
            Path({str(closed)!r}).touch()  # the caller's clean-up (the CLI closes the hub)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        deadline = time.monotonic() + 15
        with client(pki.party("be-platform")) as http:
            while True:
                try:
                    # Starlette() has no routes: 404 proves a full mTLS round trip.
                    assert http.get(f"https://127.0.0.1:{port}/").status_code == 404
                    break
                except httpx.ConnectError:
                    assert process.poll() is None, "server exited"
                    assert time.monotonic() < deadline, "server did not start"
                    time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down and serve_forever returns (uvicorn would raise the signal again,
        # ending the process before its caller closes the hub): the caller's clean-up runs
        # and the process ends normally.
        assert process.wait(timeout=15) == 0
        assert stopped.exists()
        assert closed.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
