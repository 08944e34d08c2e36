"""Authorisation: every route of the hub, called by every kind of identity over real mutual TLS.

The table of ``gateway.authz.ROUTES`` is the one place that says who may call what; these tests
walk the app's own routes (so a new route is covered the day it is added) and prove that each
refuses every identity without its permission, and lets the right one past the guard.
"""

from __future__ import annotations

import re

import httpx
import pytest

from gateway import authz
from gateway.errors import ConfigurationError
from gateway.service.app import create_app, served_routes
from gateway.testing import RunningHub

# Who calls: a party, each role, and what they hold.
CALLERS = {
    "be-platform": {"send", "status", "wsdl", "describe"},
    "be-wal-spw": {"send", "status", "wsdl", "describe"},
    "operator": {"operate", "describe"},
    "auditor": {"audit", "describe"},
}


def _routes(running: RunningHub) -> list[tuple[str, str]]:
    return sorted(served_routes(create_app(running.hub)))


def _concrete(path: str) -> str:
    """A path template with each parameter given a harmless value."""
    return re.sub(r"\{[^}]+\}", "1", path)


def test_the_table_names_exactly_the_routes_the_app_serves(quiet_hub: RunningHub) -> None:
    served = set(_routes(quiet_hub))
    assert served == set(authz.ROUTES), (
        f"served but not in the table: {served - set(authz.ROUTES)};"
        f" in the table but not served: {set(authz.ROUTES) - served}"
    )


def test_a_route_without_a_permission_stops_the_app_from_starting() -> None:
    with pytest.raises(ConfigurationError, match="GET /v1/new-thing"):
        authz.check_routes([("GET", "/v1/messages/{message_id}"), ("GET", "/v1/new-thing")])


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_every_route_refuses_every_caller_without_its_permission(
    quiet_hub: RunningHub, caller: str
) -> None:
    held = CALLERS[caller]
    checked = 0
    with quiet_hub.client(caller) as client:
        for method, path in _routes(quiet_hub):
            permission = authz.ROUTES[(method, path)]
            response = client.request(method, _concrete(path))
            code = _code(response)
            if permission in held:
                assert code not in {"authz.role-required", "auth.unknown-party"}, (
                    f"{caller} {method} {path}: refused ({code})"
                )
                assert response.status_code not in (401, 403), (method, path, response.text)
            else:
                # (SOAP 1.1 carries every fault with HTTP 500, as its binding says.)
                soap = path.startswith("/soap/")
                assert response.status_code == (500 if soap else 403), (caller, method, path)
                assert code == "authz.role-required", (caller, method, path, code)
                checked += 1
    assert checked >= 5  # every caller is refused somewhere


def test_a_party_reads_only_the_status_of_its_own_messages(quiet_hub: RunningHub) -> None:
    """Sender and receivers see a message's status; another party is told there is none."""
    assert authz.may_read_status(authz.Identity("party", "a"), "a", ["b"])
    assert authz.may_read_status(authz.Identity("party", "b"), "a", ["b"])
    assert not authz.may_read_status(authz.Identity("party", "c"), "a", ["b"])
    assert not authz.may_read_status(authz.OPERATOR, "a", ["b"])


def _code(response: httpx.Response) -> str | None:
    if "json" in response.headers.get("content-type", ""):
        body = response.json()
        return body.get("code") if isinstance(body, dict) else None
    match = re.search(rb"<h:code>([^<]+)</h:code>", response.content)
    return match[1].decode() if match else None


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "request.not-found"),
        ("DELETE", "/v1/messages", 405, "request.method-not-allowed"),
        ("PUT", "/healthz", 405, "request.method-not-allowed"),
    ],
)
def test_no_route_is_a_problem_too(
    quiet_hub: RunningHub, method: str, path: str, status: int, code: str
) -> None:
    with quiet_hub.client("be-platform") as client:
        response = client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    if status == 405:
        assert response.headers["allow"]
