"""Shared fixtures: one development PKI per test session, the real hub on loopback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.certs import DevPki
from gateway.config import HubConfig, Settings
from gateway.testing import RunningHub, ensure_pki, running_hub

HOME = Path(__file__).resolve().parents[1]
EXAMPLES = HOME / "examples"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_pki(HubConfig.load(Settings()), tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def quiet_hub(tmp_path_factory: pytest.TempPathFactory, pki: DevPki) -> Iterator[RunningHub]:
    """The hub alone (no back offices, deliveries paused): for what it accepts and refuses."""
    with running_hub(
        tmp_path_factory.mktemp("hub"),
        sandbox=False,
        pki=pki,
        delivery_workers=0,
        body_timeout_s=1.0,
    ) as running:
        yield running


def post_applications(running: RunningHub, count: int) -> list[dict[str, Any]]:
    """The portal's example application, ``count`` times with fresh message ids, each accepted
    (202); the bodies sent."""
    sent = []
    with running.client("be-platform") as client:
        for _ in range(count):
            body = json.loads(
                (EXAMPLES / "be-platform" / "application.submitted.json").read_bytes()
            )
            body["header"]["messageId"] = str(uuid.uuid4())
            response = client.post(
                "/v1/messages",
                content=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 202, response.text
            sent.append(body)
    return sent
