"""The hub's HTTP service: REST and SOAP (1.1 and 1.2) endpoints, status, health and metrics.

Every request is authenticated by its TLS client certificate (the server refuses a handshake
without one); the certificate's identity is a party or a role. Errors leave as RFC 9457
problem+json on REST and as SOAP Faults on SOAP, from the one table of ``gateway.errors``.

One SOAP endpoint speaks both versions; the request's Content-Type tells which (SOAP 1.1:
``text/xml`` and a ``SOAPAction`` header; SOAP 1.2: ``application/soap+xml; action="…"``), and
the receipt or the Fault is answered in that version, with the HTTP status of its binding.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from xml.sax.saxutils import escape

import structlog
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from lxml import etree
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import authz, evidence, jws, outbox, pipeline
from gateway.certs import Identity
from gateway.errors import (
    AuthenticationError,
    GatewayError,
    InboundError,
    NotFoundError,
    OutboxError,
    ParseError,
    PayloadTooLargeError,
    RateLimitedError,
    StoreError,
    problem_body,
    problem_of,
)
from gateway.evidence import Receipt
from gateway.hub import Hub, new_trace_id
from gateway.namespaces import HUB_NS
from gateway.outbox import iso, utc_now
from gateway.service import log as log_api
from gateway.service import openapi as docs
from gateway.service.tls import client_certificate
from gateway.store import UnitOfWork
from gateway.xml import (
    SOAP_ENVELOPE_NS,
    SoapVersion,
    soap_action_of,
    soap_content_type,
    soap_fault,
    soap_version_of,
)

__all__ = ["create_app", "served_routes"]

log = structlog.get_logger("guichet.service")

TRACE_HEADER = "BelGov-Trace-Id"
RELATED_TRACE_HEADER = "BelGov-Related-Trace-Id"
_TRACE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,36}$")


class _Lookup:
    """The pipeline's narrow view of the store."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def case(self, subject: str) -> tuple[str | None, list[str]] | None:
        return self.hub.store.case(subject)

    def sender_of(self, message_id: str) -> str | None:
        row = self.hub.store.message(message_id)
        return row.sender if row else None


class TraceMiddleware:
    """Binds the exchange's trace id (the caller's ``BelGov-Trace-Id``, or a new one) to the
    request and to every log line, and returns it. Plain ASGI: no per-request task or copy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"belgov-trace-id"), None
        )
        trace_id = given if given and _TRACE_ID.match(given) else new_trace_id()
        scope.setdefault("state", {})["trace_id"] = trace_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(trace_id=trace_id)
        extra = [(b"belgov-trace-id", trace_id.encode())]
        if given:
            extra.append((RELATED_TRACE_HEADER.lower().encode(), given[:36].encode("latin-1")))

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"belgov-trace-id"]
                message = {**message, "headers": headers + extra}
            await send(message)

        await self.app(scope, receive, send_with_trace)


def _caller(request: Request) -> Identity:
    """The identity the guard authenticated for this request (every route has one)."""
    identity: Identity = request.state.identity
    return identity


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body of {declared} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        # A sender that trickles its body (or stops mid-way) does not hold a connection forever.
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:  # refused while streaming, before it is read whole
                    raise PayloadTooLargeError(f"body exceeds {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise InboundError(
            f"the body did not arrive within {timeout_s:g} s", code="request.timeout"
        ) from None
    return b"".join(chunks)


def _delivery_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise NotFoundError(f"no delivery {text[:40]!r}", code="outbox.not-found")
    return int(text)


# A 503 (the store is away, e.g. a database restart) says when to try again: soon. The sender
# retries with the same message id, which can never seal a message twice.
RETRY_AFTER_S = 2


def _headers(error: GatewayError, status: int, trace_id: str) -> dict[str, str]:
    headers = {TRACE_HEADER: trace_id}
    if isinstance(error, RateLimitedError):
        headers["Retry-After"] = str(error.retry_after)
    elif status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    return headers


def problem_response(error: GatewayError, trace_id: str) -> JSONResponse:
    body = problem_body(error, trace_id)
    return JSONResponse(
        body,
        status_code=body["status"],
        media_type="application/problem+json",
        headers=_headers(error, body["status"], trace_id),
    )


def _soap_envelope(version: SoapVersion, body: str) -> bytes:
    namespace = SOAP_ENVELOPE_NS[version]
    prefix = "soap" if version == "1.1" else "env"
    return (
        f'<{prefix}:Envelope xmlns:{prefix}="{namespace}"><{prefix}:Body>{body}'
        f"</{prefix}:Body></{prefix}:Envelope>"
    ).encode()


def soap_fault_response(
    error: GatewayError, trace_id: str, version: SoapVersion = "1.1"
) -> Response:
    """The error as a SOAP Fault of ``version``, its ``h:problem`` detail the REST problem's."""
    body = problem_body(error, trace_id)
    problem = etree.Element(f"{{{HUB_NS}}}problem", nsmap={"h": HUB_NS})
    for key in ("code", "type", "status", "path", "line", "schemaId", "traceId"):
        if key in body:
            etree.SubElement(problem, f"{{{HUB_NS}}}{key}").text = str(body[key])
    content, status = soap_fault(problem_of(error).soap_fault, error.detail, version, problem)
    if isinstance(error, RateLimitedError):
        # Refused at the HTTP layer, before any SOAP is read: the status every HTTP stack
        # understands (with its Retry-After), whatever the binding says of faults.
        status = 429
    return Response(
        content,
        status_code=status,
        media_type=soap_content_type(version),
        headers=_headers(error, body["status"], trace_id),
    )


def _receipt_xml(receipt: Receipt, version: SoapVersion = "1.1") -> bytes:
    receivers = "".join(f"<h:receiver>{escape(r)}</h:receiver>" for r in receipt.receivers)
    return _soap_envelope(
        version,
        f'<h:receipt xmlns:h="{HUB_NS}">'
        f"<h:messageId>{escape(receipt.message_id)}</h:messageId>"
        f"<h:status>{receipt.status}</h:status>"
        f"<h:leafIndex>{receipt.leaf_index}</h:leafIndex>"
        f"<h:leafHash>{receipt.leaf_hash}</h:leafHash>"
        f"<h:time>{receipt.time}</h:time>"
        f"<h:keyId>{receipt.key_id}</h:keyId>"
        f"<h:signature>{receipt.signature}</h:signature>"
        f"<h:receivers>{receivers}</h:receivers>"
        "</h:receipt>",
    )


def _check_soap_action(hub: Hub, validated: pipeline.ValidatedMessage, action: str | None) -> None:
    """An action, when given, must be the one the hub's WSDL gives this payload (WS-I BP): the
    SOAPAction header in SOAP 1.1, the ``action`` parameter of the Content-Type in SOAP 1.2."""
    if not action:
        return
    endpoint = hub.soap_endpoints.get(validated.inbound.sender)
    expected = endpoint.actions.get(validated.element.tag) if endpoint else None
    if expected is not None and action != expected:
        where = "SOAPAction" if validated.inbound.transport == "soap11" else "The action parameter"
        raise ParseError(
            f'{where} "{action}" does not match the payload, whose action is "{expected}"',
            code="soap.action-mismatch",
        )


def _stages(
    hub: Hub, inbound: pipeline.InboundMessage, soap_action: str | None, seen: dict[str, str]
) -> Callable[[UnitOfWork], Receipt]:
    """Every stage up to the seal, on the hub's pipeline thread; returns the unit to commit."""
    validated = pipeline.validate(inbound, hub.mappings, hub.limits, hub.signatures)
    seen["type"] = validated.message_type
    _check_soap_action(hub, validated, soap_action)
    authorised = pipeline.authorise(validated, hub.parties)
    canonical = pipeline.to_canonical(authorised, hub.mappings)
    routed = pipeline.route(canonical, hub.parties, hub.mappings, _Lookup(hub))
    return pipeline.seal(routed, hub.signer, hub.person_key)


async def accept(
    hub: Hub, inbound: pipeline.InboundMessage, soap_action: str | None = None
) -> Receipt:
    """Run the pipeline on one inbound message; seal it, or seal its rejection and raise.

    The stages are CPU work: they run on the hub's pipeline thread, so that the event loop keeps
    answering (health checks, other connections) while a large message is translated."""
    started = time.perf_counter()
    seen = {"type": "unknown"}
    try:
        context = contextvars.copy_context()  # the trace id bound to this request's log lines
        work = await asyncio.get_running_loop().run_in_executor(
            hub.pipeline_executor, context.run, _stages, hub, inbound, soap_action, seen
        )
        receipt = await hub.store.write_async(work)
    except InboundError as error:
        message_type = seen["type"]
        hub.metrics.messages.labels(inbound.sender, message_type, error.code).inc()
        log.info(
            "message.rejected",
            sender=inbound.sender,
            type=message_type,
            code=error.code,
            path=error.path,
            schema_id=error.schema_id,
        )
        leaf = evidence.Leaf.of(
            pipeline.rejection_record(
                inbound.sender,
                inbound.body,
                inbound.trace_id,
                inbound.received_at,
                error.code,
                error.path,
            )
        )
        await hub.store.write_async(
            lambda unit: evidence.append(unit, hub.signer, leaf, inbound.received_at)
        )
        raise
    hub.outbox.wake()
    message_type = seen["type"]
    hub.metrics.messages.labels(inbound.sender, message_type, receipt.status).inc()
    hub.metrics.pipeline_seconds.observe(time.perf_counter() - started)
    log.info(
        "message.accepted",
        sender=inbound.sender,
        type=message_type,
        message_id=receipt.message_id,
        leaf_index=receipt.leaf_index,
        receivers=list(receipt.receivers),
        status=receipt.status,
    )
    return receipt


def create_app(hub: Hub) -> FastAPI:
    async def guard(request: Request) -> None:
        """Authenticate the caller and check the route's permission (gateway.authz), before
        anything else of the request is read."""
        route = request.scope.get("route")
        template = route.path if isinstance(route, APIRoute) else request.url.path
        identity = authenticate(request)
        permission = authz.permission_of(request.method, template)
        if permission is None:  # check_routes makes this impossible; refuse all the same
            raise AuthenticationError("no one may call this route", code="authz.forbidden")
        authz.check(identity, permission)
        request.state.identity = identity
        if permission == "send":  # before the body is read: a flood costs the hub little
            try:
                hub.rate_limiter.take(identity.name)
            except RateLimitedError:
                await seal_rate_limits()  # never turns the 429 into anything else
                raise

    async def seal_rate_limits(force: bool = False) -> None:
        """Seal the rate limiter's due records (at most one per party per interval); what the
        store cannot take now is given back, to be sealed with the next record."""
        records = hub.rate_limiter.due_records(iso(utc_now()), force=force)
        for index, record in enumerate(records):
            try:
                await hub.store.write_async(_sealing(evidence.Leaf.of(record), str(record["time"])))
            except GatewayError as exc:
                hub.rate_limiter.give_back(records[index:])
                log.warning("rate-limit.seal-failed", code=exc.code)
                return

    def _sealing(leaf: evidence.Leaf, at: str) -> Callable[[UnitOfWork], object]:
        return lambda unit: evidence.append(unit, hub.signer, leaf, at)

    def authenticate(request: Request) -> Identity:
        identities = hub.identities
        return identities.authenticate(
            client_certificate(request.scope),
            request.client.host if request.client else None,
            request.headers.get(identities.header),
        )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        """While serving: the rate limiter's pending refusals are sealed every interval (the
        tail of a flood too), and once more when the service stops."""

        async def flush_rate_limits() -> None:
            while True:
                await asyncio.sleep(hub.config.settings.rate_limit_evidence_s)
                await seal_rate_limits()

        task = asyncio.create_task(flush_rate_limits())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await seal_rate_limits(force=True)

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # no browser UI (it would load scripts from elsewhere)
        redoc_url=None,
        openapi_url=None,  # served below, behind the guard like every other route
        dependencies=[Depends(guard)],
        title="Guichet",
        version="0.1.0",
        description="Exchange hub of Belgium's single window for the employment of foreign "
        "workers. Every call is authenticated by mutual TLS.",
    )

    app.add_middleware(TraceMiddleware)

    def error_response(request: Request, error: GatewayError) -> Response:
        trace_id = getattr(request.state, "trace_id", new_trace_id())
        if isinstance(error, StoreError):
            # The store's own words (addresses, keys of rows) are for the operator's log; the
            # caller learns that it is away and when to try again.
            log.warning("store.unavailable", code=error.code, detail=error.detail[:300])
            error = StoreError("the hub's store is unavailable; try again later", code=error.code)
        if request.url.path.startswith("/soap/"):
            # In the caller's version, as its Content-Type announced it: a refusal may come
            # before the envelope is read, and a parsed envelope agrees with it or is refused.
            version = soap_version_of(request.headers.get("content-type", ""))
            return soap_fault_response(error, trace_id, version)
        return problem_response(error, trace_id)

    @app.exception_handler(GatewayError)
    async def on_error(request: Request, error: GatewayError) -> Response:
        return error_response(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def on_no_route(request: Request, error: StarletteHTTPException) -> Response:
        """No such route, or not with this method: a problem like every other refusal."""
        if error.status_code == 405:
            refused: GatewayError = InboundError(
                f"{request.method} is not allowed here", code="request.method-not-allowed"
            )
        elif error.status_code == 404:
            refused = NotFoundError("no such resource", code="request.not-found")
        else:
            refused = InboundError(str(error.detail)[:200], code="request.invalid")
        response = error_response(request, refused)
        for name, value in (error.headers or {}).items():  # e.g. Allow, on a 405
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> Response:
        log.error("request.failed", error_type=type(error).__name__)
        wrapped = GatewayError("internal error; quote the trace id to the operator")
        return error_response(request, wrapped)

    async def inbound(request: Request, transport: pipeline.Transport) -> pipeline.InboundMessage:
        """The authenticated sender and the exact bytes it sent, read within the limits."""
        sender = _caller(request).name
        settings = hub.config.settings
        return pipeline.InboundMessage(
            sender=sender,
            body=await _read_body(request, hub.limits.max_bytes, settings.body_timeout_s),
            content_type=request.headers.get("content-type", ""),
            transport=transport,
            trace_id=request.state.trace_id,
            received_at=iso(utc_now()),
            signature_header=request.headers.get(jws.HEADER),
        )

    @app.post(
        "/v1/messages",
        status_code=202,
        response_model=None,
        responses=docs.responses(
            {
                202: ("Accepted: the receipt of the message sealed in the log", docs.Receipt),
                200: ("The same message again (same id, same content): its receipt", docs.Receipt),
            },
            *docs.SEND,
        ),
        openapi_extra=docs.SEND_REQUEST,
    )
    async def post_message(request: Request) -> Response:
        """Send a message (JSON or XML by Content-Type, in the sender's own format)."""
        receipt = await accept(hub, await inbound(request, "rest"))
        return JSONResponse(
            receipt.as_json(), status_code=202 if receipt.status == "accepted" else 200
        )

    @app.post(
        "/soap/v1",
        response_model=None,
        response_class=Response,
        responses=docs.responses(
            {200: ("The receipt, in the request's SOAP version", docs.SOAP_BODY)},
            *docs.SEND,
            "soap.",
            soap=True,
        ),
        openapi_extra=docs.SOAP_REQUEST,
    )
    async def post_soap(request: Request) -> Response:
        """SOAP 1.1 and 1.2 document/literal endpoint; its WSDL is at ``?wsdl``."""
        content_type = request.headers.get("content-type", "")
        version = soap_version_of(content_type)
        message = await inbound(request, "soap11" if version == "1.1" else "soap12")
        action = soap_action_of(content_type, request.headers.get("soapaction"))
        receipt = await accept(hub, message, action)
        return Response(_receipt_xml(receipt, version), media_type=soap_content_type(version))

    @app.get(
        "/soap/v1",
        response_model=None,
        response_class=Response,
        responses=docs.responses(
            {200: ("The WSDL (or, with ?xsd=NAME, a schema it imports)", docs.XML_BODY)},
            "message.not-found",
            soap=True,
        ),
        openapi_extra=docs.WSDL_QUERY,
    )
    async def get_wsdl(request: Request) -> Response:
        """The WSDL of the hub's endpoint as the calling party sees it (``?wsdl``), and the
        schemas it imports (``?xsd=NAME``)."""
        party = _caller(request).name
        endpoint = hub.soap_endpoints.get(party)
        if endpoint is None:
            raise NotFoundError(f"{party} does not use SOAP", code="message.not-found")
        xsd = request.query_params.get("xsd")
        if xsd is not None:
            if xsd not in endpoint.schemas:  # only what this WSDL imports, nothing else
                raise NotFoundError("no such schema in this WSDL", code="message.not-found")
            return Response(endpoint.schemas[xsd], media_type="text/xml; charset=utf-8")
        public = hub.config.settings.public_url
        base = f"{public.rstrip('/')}/soap/v1" if public else str(request.url.replace(query=None))
        wsdl = re.sub(
            r'(<soap(?:12)?:address\s+location=")[^"]*(")',
            lambda m: f"{m[1]}{base}{m[2]}",
            endpoint.wsdl,
        )
        wsdl = re.sub(
            r'schemaLocation="([^"]+)"', lambda m: f'schemaLocation="{base}?xsd={m[1]}"', wsdl
        )
        return Response(wsdl, media_type="text/xml; charset=utf-8")

    @app.get(
        "/v1/messages/{message_id}",
        responses=docs.responses(
            {200: ("The message and its deliveries", docs.MessageStatus)},
            "message.not-found",
            "store.unavailable",
        ),
    )
    async def get_message(message_id: str, request: Request) -> dict[str, Any]:
        """Status of a message the caller sent or receives, per receiver."""
        identity = _caller(request)
        caller = identity.name
        row = await asyncio.to_thread(hub.store.message, message_id)
        deliveries = await asyncio.to_thread(hub.store.deliveries, message_id) if row else []
        if row is None or not authz.may_read_status(
            identity, row.sender, (d.receiver for d in deliveries)
        ):
            raise NotFoundError(f"no message {message_id[:80]} visible to {caller}")
        return {
            "messageId": row.id,
            "type": row.type,
            "sender": row.sender,
            "subject": row.subject,
            "receivedAt": row.received_at,
            "traceId": row.trace_id,
            "leafIndex": row.leaf_index,
            "deliveries": [
                outbox.delivery_status(d) for d in deliveries if caller in (row.sender, d.receiver)
            ],
        }

    @app.get("/healthz", responses=docs.responses({200: ("Alive", docs.Health)}))
    async def healthz() -> dict[str, str]:
        """Liveness: the service answers (the operator's)."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=None,
        responses=docs.responses(
            {
                200: ("Ready: the store answers", docs.Ready),
                503: ("Not ready: the store does not answer", docs.NotReady),
            }
        ),
    )
    async def readyz() -> Response:
        """Readiness: the store answers (the operator's)."""
        try:  # off the event loop: a database that does not answer must not stall the others
            await asyncio.to_thread(hub.store.ping)
        except Exception as exc:  # noqa: BLE001 - any store failure means not ready
            return JSONResponse(
                {"status": "unavailable", "store": type(exc).__name__}, status_code=503
            )
        return JSONResponse(
            {
                "status": "ready",
                "parties": len(hub.parties.parties),
                "mappings": len(hub.mappings.mappings),
            }
        )

    @app.get(
        "/metrics",
        response_model=None,
        response_class=Response,
        responses=docs.responses(
            {200: ("Prometheus text exposition", docs.METRICS_BODY)}, "store.unavailable"
        ),
    )
    async def metrics() -> Response:
        """Prometheus metrics, for the operator role (they count every party's traffic)."""
        hub.metrics.outbox_depth.set(await asyncio.to_thread(hub.store.outbox_depth))
        return Response(generate_latest(hub.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # The outbox, for the operator role: dead letters listed, requeued or discarded.
    def operator(request: Request) -> dict[str, str]:
        identity = _caller(request)
        return {"certificate": f"{identity.kind}:{identity.name}"}

    async def operator_reason(request: Request) -> str | None:
        body = await _read_body(request, 16 * 1024, hub.config.settings.body_timeout_s)
        if not body.strip():
            return None
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise OutboxError("the body must be JSON", code="outbox.invalid") from exc
        reason = data.get("reason") if isinstance(data, dict) else None
        if reason is not None and not isinstance(reason, str):
            raise OutboxError('"reason" must be a string', code="outbox.invalid")
        return reason

    @app.get(
        "/v1/outbox",
        responses=docs.responses(
            {200: ("Deliveries, newest first", docs.DeliveryList)},
            "outbox.invalid",
            "store.unavailable",
        ),
        openapi_extra=docs.OUTBOX_QUERY,
    )
    async def list_outbox(request: Request) -> dict[str, Any]:
        """Deliveries, newest first, by state and receiver (the operator's view)."""
        operator(request)
        query = request.query_params
        state, receiver = query.get("state"), query.get("receiver")
        limit = outbox.check_listing(state, query.get("limit"))
        rows = await asyncio.to_thread(hub.store.list_deliveries, state, receiver, limit)
        return {"deliveries": [outbox.delivery_entry(row) for row in rows]}

    @app.post(
        "/v1/outbox/{delivery_id}/retry",
        responses=docs.responses(
            {200: ("The delivery, pending again", docs.Delivery)}, *docs.OUTBOX_ACTION
        ),
        openapi_extra=docs.RETRY_REASON,
    )
    async def retry_delivery(delivery_id: str, request: Request) -> dict[str, Any]:
        """A dead letter back to pending, due now (sealed as ``delivery.requeued``)."""
        by = {**operator(request), "api": "POST /v1/outbox/{id}/retry"}
        reason = await operator_reason(request)
        row = await asyncio.to_thread(
            outbox.requeue, hub.store, hub.signer, _delivery_id(delivery_id), by=by, reason=reason
        )
        hub.outbox.wake()
        return outbox.delivery_entry(row)

    @app.post(
        "/v1/outbox/{delivery_id}/discard",
        responses=docs.responses(
            {200: ("The delivery, discarded", docs.Delivery)}, *docs.OUTBOX_ACTION
        ),
        openapi_extra=docs.DISCARD_REASON,
    )
    async def discard_delivery(delivery_id: str, request: Request) -> dict[str, Any]:
        """A dead letter set aside, with the operator's reason (sealed as
        ``delivery.discarded``)."""
        by = {**operator(request), "api": "POST /v1/outbox/{id}/discard"}
        reason = await operator_reason(request)
        row = await asyncio.to_thread(
            outbox.discard,
            hub.store,
            hub.signer,
            _delivery_id(delivery_id),
            by=by,
            reason=reason or "",
        )
        return outbox.delivery_entry(row)

    # The evidence log, for the auditor role.
    app.include_router(log_api.router(hub))

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        """This description (for every authenticated caller)."""
        return app.openapi()

    app.openapi = lambda: docs.build_openapi(app)  # type: ignore[method-assign]
    authz.check_routes(served_routes(app))
    return app


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) the app serves: its own routes, and those of included
    routers (which FastAPI keeps behind a lazy wrapper, but describes in its OpenAPI)."""
    served = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    for path, operations in app.openapi().get("paths", {}).items():
        served |= {(method.upper(), path) for method in operations if method in _HTTP_METHODS}
    return served
