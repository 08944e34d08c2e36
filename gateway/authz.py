"""Who may call what: the one table where identities meet the hub's endpoints.

Every HTTP route of the hub is listed in ``ROUTES`` with the one permission it needs; the service
checks it for every request before the route runs (``gateway.service.app``), and refuses to start
with a route missing from the table. A permission names the identities that hold it:

=============  ===========================================================================
permission     held by
=============  ===========================================================================
``send``       parties (what each may send to whom: ``sends`` and the routes of
               parties.toml, checked by the pipeline's ``authorise`` stage)
``status``     parties; a message's status only for its sender and its receivers
               (:func:`may_read_status`)
``wsdl``       parties (the WSDL of the hub's endpoint as that party sees it)
``operate``    the operator role: outbox, health, readiness, metrics
``audit``      the auditor role: the evidence log, its proofs
``describe``   every authenticated identity: the OpenAPI description
=============  ===========================================================================

Identities come from certificates (``gateway.trust``): a party, or a role (operator, auditor).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Literal

from gateway.certs import Identity
from gateway.errors import AuthenticationError, ConfigurationError

__all__ = [
    "AUDITOR",
    "OPERATOR",
    "PERMISSIONS",
    "ROUTES",
    "Identity",
    "Permission",
    "check",
    "check_routes",
    "may_read_status",
    "permission_of",
]

Permission = Literal["send", "status", "wsdl", "operate", "audit", "describe"]

OPERATOR = Identity("role", "operator")
AUDITOR = Identity("role", "auditor")

# Who holds each permission: "party" (any party of parties.toml), or one role.
PERMISSIONS: Mapping[Permission, str] = MappingProxyType(
    {
        "send": "party",
        "status": "party",
        "wsdl": "party",
        "operate": "role:operator",
        "audit": "role:auditor",
        "describe": "any",
    }
)

# Every route of the hub (method, path template) → the permission it needs.
ROUTES: Mapping[tuple[str, str], Permission] = MappingProxyType(
    {
        ("POST", "/v1/messages"): "send",
        ("POST", "/soap/v1"): "send",
        ("GET", "/soap/v1"): "wsdl",
        ("GET", "/v1/messages/{message_id}"): "status",
        ("GET", "/healthz"): "operate",
        ("GET", "/readyz"): "operate",
        ("GET", "/metrics"): "operate",
        ("GET", "/v1/outbox"): "operate",
        ("POST", "/v1/outbox/{delivery_id}/retry"): "operate",
        ("POST", "/v1/outbox/{delivery_id}/discard"): "operate",
        ("GET", "/v1/log/checkpoint"): "audit",
        ("GET", "/v1/log/proof/inclusion"): "audit",
        ("GET", "/v1/log/proof/consistency"): "audit",
        ("GET", "/v1/log/records/{index}"): "audit",
        ("GET", "/openapi.json"): "describe",
    }
)

_WHAT = {
    "send": "sending messages is for parties",
    "status": "message status is for parties",
    "wsdl": "the WSDL is for SOAP parties",
    "operate": "this endpoint is for the operator",
    "audit": "the evidence log is for the auditor role",
    "describe": "",
}


def permission_of(method: str, path: str) -> Permission | None:
    """The permission a route needs (``path`` is its template, e.g. ``/v1/outbox/{id}/retry``);
    ``None`` for a route not in the table, which no one may call."""
    return ROUTES.get((method.upper(), path))


def check(identity: Identity, permission: Permission) -> None:
    """Refuse (403 ``authz.role-required``) an identity without ``permission``."""
    holder = PERMISSIONS[permission]
    if holder == "any":
        return
    if holder == "party":
        allowed = identity.kind == "party"
    else:
        allowed = (identity.kind, identity.name) == ("role", holder.removeprefix("role:"))
    if not allowed:
        raise AuthenticationError(
            f"{_WHAT[permission]}; this certificate names {identity.kind} {identity.name}",
            code="authz.role-required",
        )


def may_read_status(caller: Identity, sender: str, receivers: Iterable[str]) -> bool:
    """A message's status is for its sender and its receivers, nobody else."""
    return caller.kind == "party" and (caller.name == sender or caller.name in set(receivers))


def check_routes(routes: Iterable[tuple[str, str]]) -> None:
    """Every (method, path) the service serves must be in ``ROUTES`` (checked at start-up: a
    route added without a permission is a configuration error, not an open door)."""
    missing = sorted({f"{m} {p}" for m, p in routes if permission_of(m, p) is None})
    if missing:
        raise ConfigurationError(
            f"routes without a permission in gateway.authz.ROUTES: {', '.join(missing)}"
        )
