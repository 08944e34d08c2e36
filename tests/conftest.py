"""Shared fixtures: one development PKI per test session, the real hub on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
