"""The hub's OpenAPI description: what each route answers, success and error alike.

The handlers build their bodies themselves (``Receipt.as_json``, ``outbox.delivery_status`` …);
the pydantic models here only *describe* those bodies, so that ``GET /openapi.json`` tells a
caller the truth: each route's success status and body, and every error status it can answer
with, derived by :func:`responses` from the error codes the route can raise and the one table of
``gateway.errors.PROBLEMS``. REST errors are ``application/problem+json`` (:class:`Problem`); on
``/soap/`` paths they are SOAP Faults with the HTTP status of their binding (SOAP 1.1: 500;
SOAP 1.2: 400 for env:Sender, 500 otherwise).
"""

# The models' fields are named as the bodies name them on the wire (messageId, leafIndex …).
# ruff: noqa: N815

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema, models_json_schema

from gateway.errors import PROBLEMS

__all__ = [
    "DOCUMENTED_MODELS",
    "Checkpoint",
    "ConsistencyProof",
    "Delivery",
    "DeliveryList",
    "DeliveryStatus",
    "Health",
    "InclusionProof",
    "LogRecord",
    "MessageStatus",
    "NotReady",
    "Problem",
    "Ready",
    "Receipt",
    "build_openapi",
    "error_statuses",
    "responses",
]

PROBLEM_JSON = "application/problem+json"
SOAP11 = "text/xml"
SOAP12 = "application/soap+xml"
REF = "#/components/schemas/{model}"
TRACE_HEADER = "BelGov-Trace-Id"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """An RFC 9457 problem; ``type`` is ``urn:guichet:problem:<code>``, stable across releases.
    Some codes add keys of their own (``state``, ``competent`` …)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["urn:guichet:problem:schema.invalid"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    code: str = Field(examples=["schema.invalid"])
    traceId: str = Field(max_length=36)
    path: str | SkipJsonSchema[None] = Field(None, description="where in the message")
    line: int | SkipJsonSchema[None] = Field(None, description="line of the message")
    schemaId: str | SkipJsonSchema[None] = Field(None, description="the schema that refused")
    parameter: str | SkipJsonSchema[None] = Field(None, description="the query parameter")
    retryAfter: int | SkipJsonSchema[None] = Field(None, description="seconds (429)")


class Receipt(_Doc):
    """Proof that the message entered the evidence log (``gateway.evidence.Receipt``)."""

    messageId: str
    status: Literal["accepted", "duplicate"]
    leafIndex: int = Field(ge=0)
    leafHash: str = Field(description="hex SHA-256")
    time: str
    keyId: str
    signature: str = Field(description="base64 DER ECDSA over the receipt statement")
    receivers: list[str]


DeliveryState = Literal["pending", "delivering", "delivered", "retrying", "dead", "discarded"]


class DeliveryStatus(_Doc):
    """One receiver's delivery; the fields that mean nothing in its state are null."""

    receiver: str
    state: DeliveryState
    attempts: int = Field(ge=0)
    deliveredAt: str | None
    nextAttemptAt: str | None
    deadAt: str | None
    lastStatus: int | None
    lastError: str | None
    discardedAt: str | None
    reason: str | None


class Delivery(DeliveryStatus):
    """A delivery as the operator sees it: its ids and case, and its status."""

    id: int
    messageId: str
    subject: str | None


class DeliveryList(_Doc):
    deliveries: list[Delivery]


class MessageStatus(_Doc):
    """A message and its deliveries (those to the caller, or all of them for its sender)."""

    messageId: str
    type: str
    sender: str
    subject: str | None
    receivedAt: str
    traceId: str
    leafIndex: int = Field(ge=0)
    deliveries: list[DeliveryStatus]


class Health(_Doc):
    status: Literal["ok"]


class Ready(_Doc):
    status: Literal["ready"]
    parties: int = Field(ge=0)
    mappings: int = Field(ge=0)


class NotReady(_Doc):
    status: Literal["unavailable"]
    store: str = Field(description="the kind of failure")


class Checkpoint(_Doc):
    """A signed tree head; with its RFC 3161 TimeStampToken once the hub has one."""

    treeSize: int = Field(ge=0)
    rootHash: str
    time: str
    keyId: str
    signature: str
    timestampToken: str | SkipJsonSchema[None] = Field(None, description="DER, base64")
    timestampAuthority: str | SkipJsonSchema[None] = None


class InclusionProof(_Doc):
    leafIndex: int = Field(ge=0)
    treeSize: int = Field(ge=1)
    leafHash: str
    inclusionPath: list[str]


class ConsistencyProof(_Doc):
    first: int = Field(ge=1)
    second: int = Field(ge=1)
    consistencyPath: list[str]


class LogRecord(_Doc):
    leafIndex: int = Field(ge=0)
    leafHash: str
    leaf: str = Field(description="the hashed bytes (RFC 8785 JSON), base64")
    record: Any = Field(description="the record those bytes hold (null if not JSON)")
    time: str
    keyId: str
    signature: str


DOCUMENTED_MODELS: tuple[type[BaseModel], ...] = (
    Problem,
    Receipt,
    DeliveryStatus,
    Delivery,
    DeliveryList,
    MessageStatus,
    Health,
    Ready,
    NotReady,
    Checkpoint,
    InclusionProof,
    ConsistencyProof,
    LogRecord,
)

# What every route can answer, whatever it does: the guard's refusals (no, an unknown or a
# refused certificate; another role's route) and the catch-all internal error.
_EVERY_ROUTE = ("auth.", "cert.", "authz.role-required", "gateway.error")

Success = type[BaseModel] | Mapping[str, Any]


def _codes(selectors: Iterable[str]) -> list[str]:
    """The codes of PROBLEMS that ``selectors`` name (a code, or a prefix ending in ``.``)."""
    chosen: list[str] = []
    for selector in selectors:
        matched = [
            code
            for code in PROBLEMS
            if code == selector or (selector.endswith(".") and code.startswith(selector))
        ]
        if not matched:
            raise ValueError(f"no error code in gateway.errors.PROBLEMS matches {selector!r}")
        chosen += [code for code in matched if code not in chosen]
    return chosen


def error_statuses(*selectors: str, soap: bool = False) -> dict[int, list[str]]:
    """Each error status a route answers with → the codes that bring it (``selectors``: the
    route's own codes; the guard's and the internal error are added). On SOAP paths the status
    is the fault's: 500 for every SOAP 1.1 fault and SOAP 1.2 env:Receiver/MustUnderstand, 400
    for a SOAP 1.2 env:Sender."""
    statuses: dict[int, list[str]] = {}
    for code in _codes((*_EVERY_ROUTE, *selectors)):
        problem = PROBLEMS[code]
        if soap:
            wanted = {500} | ({400} if problem.soap_fault == "Client" else set())
        else:
            wanted = {problem.status}
        for status in wanted:
            statuses.setdefault(status, []).append(code)
    return dict(sorted(statuses.items()))


def _content(body: Success) -> dict[str, Any]:
    if isinstance(body, type):
        return {"application/json": {"schema": {"$ref": REF.format(model=body.__name__)}}}
    return dict(body)


def _xml(*media_types: str) -> dict[str, Any]:
    return {media: {"schema": {"type": "string"}} for media in media_types}


XML_BODY = _xml(SOAP11)
SOAP_BODY = _xml(SOAP11, SOAP12)
METRICS_BODY = {"text/plain": {"schema": {"type": "string"}}}


def responses(
    ok: Mapping[int, tuple[str, Success]], *selectors: str, soap: bool = False
) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: ``ok`` (status → description and body: a model of this
    module, or a content mapping) and, for each error status of :func:`error_statuses`, a
    problem+json body (or, on SOAP paths, a Fault in the version of the request)."""
    described: dict[int | str, dict[str, Any]] = {
        status: {"description": text, "content": _content(body)}
        for status, (text, body) in ok.items()
    }
    for status, codes in error_statuses(*selectors, soap=soap).items():
        if soap:
            content = _xml(SOAP12) if status == 400 else SOAP_BODY
            text = "SOAP Fault (its h:problem detail names the code)"
        else:
            content = {PROBLEM_JSON: {"schema": {"$ref": REF.format(model="Problem")}}}
            text = "Problem"
        entry = described.setdefault(status, {"description": "", "content": {}})
        entry["description"] = (entry["description"] + "; " if entry["description"] else "") + (
            f"{text}: {', '.join(codes)}"
        )
        for media, schema in content.items():
            entry["content"].setdefault(media, schema)
    return described


def _trace_parameter() -> dict[str, Any]:
    return {
        "name": TRACE_HEADER,
        "in": "header",
        "required": False,
        "description": "the exchange's trace id ([A-Za-z0-9._:-]{1,36}; another value is "
        "replaced by a new one); answered in BelGov-Trace-Id",
        "schema": {"type": "string", "maxLength": 36},
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's description of ``app``, completed: the models of this module as components,
    the trace header on every operation, and none of FastAPI's own 422 ``HTTPValidationError``
    (every parameter is a string the handlers check themselves: their refusals are problems)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    _, definitions = models_json_schema(
        [(model, "serialization") for model in DOCUMENTED_MODELS], ref_template=REF
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in definitions.get("$defs", {}).items():
        for field in definition.get("properties", {}).values():
            if field.get("default", ...) is None and "anyOf" not in field:
                del field["default"]  # an absent key, not a null one (SkipJsonSchema)
        components[name] = definition
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            refused = operation.get("responses", {}).get("422", {})
            if "HTTPValidationError" in str(refused.get("content", {})):
                del operation["responses"]["422"]
            parameters = operation.setdefault("parameters", [])
            if not any(p.get("name") == TRACE_HEADER for p in parameters):
                parameters.append(_trace_parameter())
    app.openapi_schema = schema
    return schema


# The codes of the routes that take a message (REST and SOAP; SOAP adds "soap.").
SEND = (
    "request.",  # rate-limited (429, Retry-After), too large, too slow, unsupported media type
    "signature.",
    "xml.",
    "json.",
    "schema.",
    "message.unknown-type",
    "message.invalid",
    "message.duplicate-id",
    "mapping.",
    "domain.",
    "authz.",
    "routing.",
    "store.unavailable",
)
# An operator's action on a delivery (with an optional JSON body of at most 16 KiB).
OUTBOX_ACTION = ("outbox.", "request.too-large", "request.timeout", "store.unavailable")
# The evidence log's routes.
LOG = ("log.invalid-parameter", "log.no-checkpoint", "store.unavailable")

_ANY: dict[str, Any] = {"schema": {}}
SEND_REQUEST: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The message in the sender's own format, JSON or XML by Content-Type",
        "content": {"application/json": _ANY, "application/xml": _ANY},
    },
    "parameters": [
        {
            "name": "X-JWS-Signature",
            "in": "header",
            "required": True,
            "description": "the sender's detached JWS (RFC 7515 Appendix F) over the body",
            "schema": {"type": "string"},
        }
    ],
}
SOAP_REQUEST: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A SOAP 1.1 (text/xml) or 1.2 (application/soap+xml) envelope, signed "
        "with WS-Security",
        "content": SOAP_BODY,
    },
    "parameters": [
        {
            "name": "SOAPAction",
            "in": "header",
            "required": False,
            "description": "SOAP 1.1: the action; when given, the WSDL's for the payload",
            "schema": {"type": "string"},
        }
    ],
}
WSDL_QUERY: dict[str, Any] = {
    "parameters": [
        {"name": "wsdl", "in": "query", "required": False, "schema": {"type": "string"}},
        {
            "name": "xsd",
            "in": "query",
            "required": False,
            "description": "a schema the WSDL imports",
            "schema": {"type": "string"},
        },
    ]
}
OUTBOX_QUERY: dict[str, Any] = {
    "parameters": [
        {
            "name": "state",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": list(get_args(DeliveryState))},
        },
        {"name": "receiver", "in": "query", "required": False, "schema": {"type": "string"}},
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        },
    ]
}


def _reason(required: bool) -> dict[str, Any]:
    reason: dict[str, Any] = {"type": "string"}
    body: dict[str, Any] = {"type": "object", "properties": {"reason": reason}}
    if required:
        reason["pattern"] = r"\S"  # not blank
        body["required"] = ["reason"]
    return {
        "requestBody": {
            "required": required,
            "description": "The operator's reason (JSON, at most 16 KiB)"
            + ("" if required else "; an empty body is none"),
            "content": {"application/json": {"schema": body}},
        }
    }


RETRY_REASON = _reason(required=False)
DISCARD_REASON = _reason(required=True)
