"""The store away (a database restart, a closed store): 503 with Retry-After, nothing accepted,
the hub still answering its health check."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from gateway.certs import DevPki
from gateway.testing import running_hub
from tests.conftest import EXAMPLES


def test_without_its_store_the_hub_answers_503_and_when_to_retry(
    tmp_path: Path, pki: DevPki
) -> None:
    with running_hub(tmp_path / "hub", sandbox=False, pki=pki, delivery_workers=0) as live:
        live.hub.store.close()
        body = json.loads((EXAMPLES / "be-platform" / "application.submitted.json").read_bytes())
        body["header"]["messageId"] = str(uuid.uuid4())
        with live.client("be-platform") as client:
            refused = client.post("/v1/messages", json=body)
        with live.client("operator") as client:
            health = client.get("/healthz")
            ready = client.get("/readyz")
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "store.unavailable"
        assert refused.headers["Retry-After"] == "2"
        assert health.status_code == 200
        assert ready.status_code == 503
