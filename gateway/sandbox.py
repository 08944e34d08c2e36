"""Sandbox back offices: what integrators, the demo and the tests deliver to.

Each party's back office is a real HTTPS server on loopback with the party's own certificate; the
caller must present a certificate of the same CA (the hub's). It speaks the party's protocol as the
real one would, and checks what it gets against the party's schema::

    REST (JSON or XML)   POST /messages   → 202 {"received": id}     invalid → 4xx problem+json
    SOAP 1.1             POST /           → 200 WSDL output element  invalid → 500 soap:Client
    SOAP 1.2             POST /           → 200 WSDL output element  invalid → 400 env:Sender

A SOAP office speaks the SOAP versions its WSDL binds: the request's Content-Type tells which
(``text/xml`` + SOAPAction, or ``application/soap+xml; action="…"``), and it answers in that
version (a version its WSDL does not bind: a VersionMismatch Fault). It calls the hub in the
version of its hub WSDL's binding; where that binds both, in its own WSDL's.

It records every valid message (:class:`Received`), deduplicates on ``Idempotency-Key`` (REST) or
the ``h:MessageId`` SOAP header (a duplicate is answered like the first and counted), fails on
demand (:meth:`BackOffice.fail_next`), and may answer as the real back office would: the
*responder* sends the next message(s) of the procedure to the hub, built from the party's example
files, in a background thread after the HTTP answer (:class:`Sent`).

What a party's back office needs beyond its mapping folder is in ``examples/sandbox.toml``: where
its envelope fields sit, the types it receives, and its script. See that file.
"""

from __future__ import annotations

import hashlib
import json
import threading
import tomllib
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
from cryptography import x509
from lxml import etree
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.soap import HUB_HEADER_NS, Wsdl, build_envelope
from gateway import jws, wssec
from gateway.certs import DevPki, TlsFiles
from gateway.errors import (
    CertificateError,
    ConfigurationError,
    GatewayError,
    InboundError,
    ParseError,
    UnsupportedMediaTypeError,
    problem_of,
)
from gateway.mapping import MappingSet, PartyFormat
from gateway.service.server import ServerThread
from gateway.service.tls import client_ssl_context
from gateway.signatures import UNDERSTOOD_HEADERS
from gateway.signing import SigningKey, VerifiedSignature
from gateway.trust import TrustStore
from gateway.xml import (
    SoapVersion,
    parse_xml,
    soap_action_of,
    soap_content_type,
    soap_fault,
    soap_payload,
    soap_version_of,
)

__all__ = [
    "HUB_REST_PATH",
    "HUB_SOAP_PATH",
    "BackOffice",
    "FieldPath",
    "OfficeProfile",
    "Received",
    "Sandbox",
    "Sent",
    "load_profiles",
]

HUB_REST_PATH = "/v1/messages"  # where REST parties send to the hub
HUB_SOAP_PATH = "/soap/v1"  # where SOAP parties send to the hub (SOAP 1.1 or 1.2)
PROFILES_FILE = "sandbox.toml"
_T = TypeVar("_T")

# How long one reply chain may wait on the hub for each call.
_REPLY_TIMEOUT_S = 10.0
# Bounded shutdown: reply chains still running are given this long, then abandoned.
_CLOSE_TIMEOUT_S = 15.0


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Received:
    """One message a back office accepted (``duplicate``: its key had been seen before)."""

    party: str
    message_type: str  # canonical type
    message_id: str  # from the body
    subject: str  # the case, from the body
    body: bytes  # the HTTP body as received (for SOAP: the whole envelope)
    idempotency_key: str | None  # Idempotency-Key header (REST) or h:MessageId (SOAP)
    trace_id: str | None  # BelGov-Trace-Id header (REST) or h:TraceId (SOAP)
    duplicate: bool
    at: datetime


@dataclass(frozen=True)
class Sent:
    """One message the responder sent to the hub, and what the hub answered."""

    party: str
    message_type: str
    message_id: str
    subject: str
    correlation_id: str  # the id of the received message this answers
    trace_id: str
    url: str
    body: bytes
    status: int | None  # None when no answer came (hub unknown or unreachable)
    response: bytes
    error: str | None
    at: datetime


# ---------------------------------------------------------------------------------------------
# Profiles (examples/sandbox.toml)


@dataclass(frozen=True)
class FieldPath:
    """A field of a party's XML form: child steps from the root element, the last may be @attr.

    Reads a value, and writes one; a missing element is created as the last child of its parent
    (the place of every optional envelope field of the reference schemas); whatever is written is
    validated against the party's schema afterwards, so a wrong place cannot go unnoticed.
    """

    text: str
    steps: tuple[str, ...]  # Clark names; the last may be "@name"

    @classmethod
    def parse(cls, text: str, namespaces: Mapping[str, str]) -> FieldPath:
        steps: list[str] = []
        for raw in (step for step in text.split("/") if step):
            attribute = raw.startswith("@")
            name = raw[1:] if attribute else raw
            prefix, _, local = name.rpartition(":")
            if prefix and prefix not in namespaces:
                raise ConfigurationError(f"{PROFILES_FILE}: unknown prefix {prefix!r} in {text!r}")
            clark = f"{{{namespaces[prefix]}}}{local}" if prefix else local
            steps.append("@" + clark if attribute else clark)
        if not steps or any(step.startswith("@") for step in steps[:-1]):
            raise ConfigurationError(f"{PROFILES_FILE}: {text!r} is not a field path")
        return cls(text, tuple(steps))

    def read(self, root: etree._Element) -> str | None:
        node: etree._Element | None = root
        for step in self.steps[:-1]:
            node = node.find(step) if node is not None else None
        if node is None:
            return None
        last = self.steps[-1]
        value = node.get(last[1:]) if last.startswith("@") else node.findtext(last)
        return value.strip() if value is not None else None

    def write(self, root: etree._Element, value: str) -> None:
        node = root
        for step in self.steps[:-1]:
            found = node.find(step)
            node = found if found is not None else etree.SubElement(node, step)
        last = self.steps[-1]
        if last.startswith("@"):
            node.set(last[1:], value)
            return
        target = node.find(last)
        if target is None:
            target = etree.SubElement(node, last)
        target.text = value


@dataclass(frozen=True)
class OfficeProfile:
    """What the sandbox knows of one party's back office (one table of ``sandbox.toml``)."""

    party: str
    message_id: FieldPath
    subject: FieldPath
    correlation: FieldPath
    sent_at: FieldPath | None
    trace: FieldPath | None
    respond: Mapping[str, tuple[str, ...]]  # received canonical type → types it sends back
    content_type: str
    wsdl: str | None = None  # its own service (SOAP parties), under schemas/<schema id>/
    hub_wsdl: str | None = None  # the hub's endpoint as it sees it (SOAP parties)
    acknowledgement: Mapping[str, str] = field(default_factory=dict)  # SOAP output fields

    @property
    def protocol(self) -> Literal["rest", "soap"]:
        """``soap`` for an office with a WSDL (its versions are the WSDL's bindings)."""
        return "soap" if self.wsdl else "rest"


def load_profiles(path: Path, mappings: MappingSet) -> dict[str, OfficeProfile]:
    """Every profile of a ``sandbox.toml``; field paths use the prefixes of each party.toml."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    profiles: dict[str, OfficeProfile] = {}
    for party, entry in data.get("office", {}).items():
        party_format = mappings.party(party)
        namespaces = party_format.namespaces

        def where(
            key: str, canonical: str, entry: Mapping[str, Any] = entry, party: str = party
        ) -> str | None:
            # The envelope's fields sit where the party's own mappings put them; sandbox.toml
            # only overrides.
            return entry.get(key) or mappings.party_field(party, f"c:envelope/c:{canonical}")

        try:
            sent_at, trace = where("sent_at", "time"), where("trace", "traceId")
            profiles[party] = OfficeProfile(
                party=party,
                message_id=FieldPath.parse(where("message_id", "id") or "", namespaces),
                subject=FieldPath.parse(where("subject", "subject") or "", namespaces),
                correlation=FieldPath.parse(
                    where("correlation", "correlationId") or "", namespaces
                ),
                sent_at=FieldPath.parse(sent_at, namespaces) if sent_at else None,
                trace=FieldPath.parse(trace, namespaces) if trace else None,
                respond={rule["on"]: tuple(rule["send"]) for rule in entry.get("respond", [])},
                content_type=entry.get("content_type", party_format.media_type),
                wsdl=entry.get("wsdl"),
                hub_wsdl=entry.get("hub_wsdl"),
                acknowledgement=dict(entry.get("acknowledgement", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigurationError(f"{path}: office {party} lacks or misspells {exc}") from exc
    return profiles


# ---------------------------------------------------------------------------------------------
# One back office


@dataclass
class _Seen:
    """The first answer to a key, given again to every duplicate."""

    digest: str
    status: int
    body: bytes
    media_type: str


class BackOffice:
    """One party's back office as an ASGI app (``.app``), recording what it receives.

    Thread-safe: the server's event loop records, tests and the demo read from other threads.
    ``identity`` (the party's certificate) and ``examples_dir`` are needed by the responder only.
    """

    def __init__(
        self,
        party_format: PartyFormat,
        profile: OfficeProfile,
        *,
        identity: TlsFiles | None = None,
        examples_dir: Path | None = None,
        hub_url: str | None = None,
        respond: bool = True,
        reply_timeout_s: float = _REPLY_TIMEOUT_S,
        hub_certificate: Path | None = None,
    ) -> None:
        self.party = party_format.party
        self.format = party_format
        self.profile = profile
        self.hub_url = hub_url
        self.respond = respond
        self._examples = examples_dir / self.party if examples_dir is not None else None
        self._reply_timeout_s = reply_timeout_s
        schema_dir = next(iter(party_format.schema.files.values())).path.parent
        # Imports may reach sibling folders of schemas/ (the hub's receipt), never beyond.
        self._wsdl = (
            Wsdl.load(schema_dir / profile.wsdl, root=schema_dir.parent) if profile.wsdl else None
        )
        # Where the hub's WSDL binds an operation in both versions, the office calls in the
        # version of its own service (SOAP 1.1 if that binds both too, or is not there).
        speaks: SoapVersion = (
            "1.2" if self._wsdl is not None and self._wsdl.versions == {"1.2"} else "1.1"
        )
        self._hub_wsdl = (
            Wsdl.load(schema_dir / profile.hub_wsdl, root=schema_dir.parent, prefer=speaks)
            if profile.hub_wsdl
            else None
        )
        if self._wsdl is not None:
            self._check_acknowledgements(self._wsdl)
        self._lock = threading.Condition()
        self._received: list[Received] = []
        self._sent: list[Sent] = []
        self._rejected: list[str] = []
        self._seen: dict[str, _Seen] = {}
        self._answered: set[str] = set()  # message ids a reply chain was started for
        self._duplicates = 0
        # (status, Retry-After) of the next calls to fail
        self._failures: list[tuple[int, str | None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._chains: list[Future[None]] = []
        self._closed = False
        self._tls = client_ssl_context(identity) if identity is not None else None
        # It signs what it sends the hub with its own certificate, and checks that what the hub
        # delivers is signed by a certificate of the same CA, as a real back office does.
        self._signer = (
            SigningKey.from_files(identity.cert, identity.key) if identity is not None else None
        )
        self._trust = TrustStore([identity.ca]) if identity is not None else None
        self._hub = (
            x509.load_pem_x509_certificate(hub_certificate.read_bytes())
            if hub_certificate is not None
            else None
        )
        path = "/" if self._wsdl is not None else "/messages"
        handler = self._soap if self._wsdl is not None else self._rest
        self.app = Starlette(routes=[Route(path, handler, methods=["POST"])])

    # what was received -------------------------------------------------------------------------
    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def sent(self) -> list[Sent]:
        with self._lock:
            return list(self._sent)

    @property
    def rejected(self) -> list[str]:
        """Why each refused call was refused (invalid bodies; not the injected failures)."""
        with self._lock:
            return list(self._rejected)

    @property
    def duplicates(self) -> int:
        with self._lock:
            return self._duplicates

    def fail_next(self, n: int, status: int = 503, *, retry_after: str | None = None) -> None:
        """Answer the next ``n`` calls with ``status`` (and nothing recorded) before working again.

        REST: a problem+json body. SOAP: a ``soap:Server`` Fault for 5xx, a ``soap:Client`` Fault
        for 4xx (SOAP 1.2: ``env:Receiver``, ``env:Sender``), in each case with that HTTP status.
        ``retry_after`` is sent as the ``Retry-After`` header (delta-seconds or an HTTP-date).
        """
        with self._lock:
            self._failures.extend([(status, retry_after)] * n)

    def wait_for(
        self, predicate: Callable[[Received], bool] = lambda _: True, timeout: float = 5.0
    ) -> Received:
        """The first received message matching ``predicate``; ``TimeoutError`` after ``timeout``."""
        return self._wait(lambda: next((r for r in self._received if predicate(r)), None), timeout)

    def wait_for_sent(
        self, predicate: Callable[[Sent], bool] = lambda _: True, timeout: float = 5.0
    ) -> Sent:
        """The first message the responder sent matching ``predicate``, within ``timeout``."""
        return self._wait(lambda: next((s for s in self._sent if predicate(s)), None), timeout)

    def _wait(self, find: Callable[[], _T | None], timeout: float) -> _T:
        with self._lock:
            if not self._lock.wait_for(lambda: find() is not None, timeout):
                raise TimeoutError(f"{self.party}: nothing matching within {timeout} s")
            found = find()
            assert found is not None
            return found

    def close(self) -> None:
        """Let running reply chains finish (each call is bounded), drop queued ones."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            chains, self._chains = self._chains, []
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            wait(chains, timeout=_CLOSE_TIMEOUT_S)

    # REST --------------------------------------------------------------------------------------
    async def _rest(self, request: Request) -> Response:
        injected = self._injected_failure()
        if injected is not None:
            status, later = injected
            failure = _problem(status, "Injected failure", "the sandbox was told to fail this call")
            return _with_retry_after(failure, later)
        body = await request.body()
        key = request.headers.get("idempotency-key")
        trace_id = request.headers.get("belgov-trace-id")
        try:
            _check_media_type(request, self.profile.content_type)
            if self._trust is not None:
                self._check_signer(
                    jws.verify_detached(request.headers.get(jws.HEADER) or "", body, now=_now())
                )
            element = self.format.read(body)
            self.format.schema.validate(element)
            received = self._record(element, body, key, trace_id)
        except InboundError as exc:
            return self._refuse_rest(exc)
        return self._answer(received, body, lambda: _json(202, {"received": received.message_id}))

    def _refuse_rest(self, exc: GatewayError) -> Response:
        with self._lock:
            self._rejected.append(f"{exc.code}: {exc.detail}")
        problem = problem_of(exc)
        return _problem(problem.status, problem.title, exc.detail, code=exc.code, path=exc.path)

    # SOAP --------------------------------------------------------------------------------------
    async def _soap(self, request: Request) -> Response:
        wsdl = self._wsdl
        assert wsdl is not None
        content_type = request.headers.get("content-type", "")
        version = soap_version_of(content_type)  # every answer is in the caller's version
        injected = self._injected_failure()
        if injected is not None:
            status, later = injected
            code: _FaultCode = "Client" if status < 500 else "Server"
            return _with_retry_after(
                _fault(code, "injected failure", version, status=status), later
            )
        if version not in wsdl.versions:
            with self._lock:
                self._rejected.append(f"soap.version-mismatch: SOAP {version} request")
            return _fault(
                "VersionMismatch",
                f"this office speaks SOAP {' and '.join(sorted(wsdl.versions))}",
                version,
            )
        body = await request.body()
        try:
            media_type = content_type.split(";")[0].strip().lower()
            if version == "1.1" and media_type != "text/xml":
                raise UnsupportedMediaTypeError(f"SOAP 1.1 is text/xml, not {media_type!r}")
            envelope = parse_xml(body)
            payload, header = soap_payload(envelope, expect=version, understood=UNDERSTOOD_HEADERS)
            if self._trust is not None:
                verified = wssec.verify_envelope(envelope, now=_now())
                self._check_signer(verified.signature)
                payload, header = verified.payload, verified.header
            operation = wsdl.operation_for(payload, version)
            action = soap_action_of(content_type, request.headers.get("soapaction")) or ""
            if action != operation.soap_action:
                where = "SOAPAction" if version == "1.1" else "action"
                raise ParseError(
                    f"{where} {action!r} is not {operation.soap_action!r} ({operation.name})",
                    code="soap.malformed",
                )
            self.format.schema.validate(payload)
            key = _header_text(header, "MessageId")
            trace_id = _header_text(header, "TraceId") or request.headers.get("belgov-trace-id")
            received = self._record(payload, body, key, trace_id)
            values = self._acknowledgement(received.message_id, received.at)
        except InboundError as exc:
            with self._lock:
                self._rejected.append(f"{exc.code}: {exc.detail}")
            return _fault("Client", exc.detail, version)
        reply = operation.serialize_output(values)
        # Duplicates are told by the payload: the envelope around it (a WS-Security timestamp, a
        # signature) may rightly differ between two attempts of one delivery.
        content = etree.tostring(payload, method="c14n", exclusive=True)
        media = "text/xml" if version == "1.1" else soap_content_type(version)
        return self._answer(
            received, content, lambda: Response(reply, 200, media_type=media), soap=version
        )

    def _check_signer(self, signature: VerifiedSignature) -> None:
        """The hub's signature, by a valid certificate of the CA (the hub's own, when known)."""
        assert self._trust is not None
        self._trust.validate(signature.certificate, signature.chain)
        if self._hub is not None and signature.certificate != self._hub:
            raise CertificateError(
                "the message is not signed by the hub's certificate", code="cert.wrong-party"
            )

    def _check_acknowledgements(self, wsdl: Wsdl) -> None:
        """Fail at start, not at the first call, if the acknowledgement does not fit the WSDL."""
        sample = self._acknowledgement(str(uuid.uuid4()), datetime.now(UTC))
        for operations in wsdl.by_version.values():
            for operation in operations.values():
                operation.check_output(parse_xml(operation.serialize_output(sample)))

    def _acknowledgement(self, message_id: str, at: datetime) -> dict[str, Any]:
        """The output fields: ``$messageId`` (of the message received), ``$now``, or constants."""
        sources: dict[str, Any] = {"$messageId": message_id, "$now": at}
        return {
            name: sources.get(source, source)
            for name, source in self.profile.acknowledgement.items()
        }

    # common ------------------------------------------------------------------------------------
    def _injected_failure(self) -> tuple[int, str | None] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _record(
        self, element: etree._Element, body: bytes, key: str | None, trace_id: str | None
    ) -> Received:
        """Read the envelope fields of a valid message; raise ``InboundError`` if they lack."""
        message_id = self.profile.message_id.read(element)
        subject = self.profile.subject.read(element)
        if not message_id or not subject:
            raise ParseError(
                f"no message id ({self.profile.message_id.text}) or subject"
                f" ({self.profile.subject.text})",
                code="message.invalid",
            )
        return Received(
            party=self.party,
            message_type=self._message_type(element),
            message_id=message_id,
            subject=subject,
            body=body,
            idempotency_key=key,
            trace_id=trace_id,
            duplicate=False,
            at=datetime.now(UTC),
        )

    def _message_type(self, element: etree._Element) -> str:
        return self.format.message_type(element)

    def _answer(
        self,
        received: Received,
        content: bytes,
        make: Callable[[], Response],
        *,
        soap: SoapVersion | None = None,
    ) -> Response:
        """Record ``received`` and answer it, or answer a duplicate as its first time.

        The key is the header's (``Idempotency-Key``, ``h:MessageId``), else the body's message
        id; ``content`` is what must be the same for a call to be a duplicate of the first.
        ``soap``: the SOAP version of the call (``None``: REST), for a refusal.
        """
        key = received.idempotency_key or received.message_id
        digest = hashlib.sha256(content).hexdigest()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None:
                if seen.digest != digest:
                    # draft-ietf-httpapi-idempotency-key-header: a key reused for another body.
                    self._rejected.append(f"idempotency key {key} reused with another body")
                    if soap is not None:
                        return _fault("Client", f"message id {key} reused with another body", soap)
                    return _problem(
                        422, "Idempotency key reused", f"{key} was used with another body"
                    )
                self._duplicates += 1
                self._received.append(replace(received, duplicate=True))
                self._lock.notify_all()
                return Response(seen.body, seen.status, media_type=seen.media_type)
            response = make()
            self._seen[key] = _Seen(
                digest, response.status_code, bytes(response.body), response.media_type or ""
            )
            self._received.append(received)
            self._lock.notify_all()
        if self.respond and received.message_type in self.profile.respond:
            response.background = BackgroundTask(self._schedule_replies, received)
        return response

    # the responder -----------------------------------------------------------------------------
    async def _schedule_replies(self, received: Received) -> None:
        # Runs after the answer has gone out; the chain itself runs on the responder's thread so
        # the connection is free at once.
        with self._lock:
            if self._closed or received.message_id in self._answered:
                return
            self._answered.add(received.message_id)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"reply-{self.party}")
            self._chains.append(self._executor.submit(self._reply_chain, received))

    def _reply_chain(self, received: Received) -> None:
        # One client per chain, closed at its end: no idle keep-alive connection is left to hold
        # the hub's server when it stops (uvicorn waits for TLS connections to close).
        if self._tls is None:
            http = None
        else:
            http = httpx.Client(verify=self._tls, timeout=self._reply_timeout_s)
        try:
            for message_type in self.profile.respond.get(received.message_type, ()):
                sent = self._reply(http, received, message_type)
                with self._lock:
                    self._sent.append(sent)
                    self._lock.notify_all()
        finally:
            if http is not None:
                http.close()

    def _reply(self, http: httpx.Client | None, received: Received, message_type: str) -> Sent:
        message_id = str(uuid.uuid4())
        trace_id = str(uuid.uuid4())
        url = ""
        body = b""
        error: str | None = None
        status: int | None = None
        answer = b""
        try:
            element = self._reply_element(received, message_type, message_id, trace_id)
            url, body, headers = self._request(element, message_id, trace_id)
            if http is None:
                raise ConfigurationError(f"{self.party}: no certificate to call the hub with")
            response = http.post(url, content=body, headers=headers)
        except (GatewayError, OSError, httpx.HTTPError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            status, answer = response.status_code, response.content
        return Sent(
            party=self.party,
            message_type=message_type,
            message_id=message_id,
            subject=received.subject,
            correlation_id=received.message_id,
            trace_id=trace_id,
            url=url,
            body=body,
            status=status,
            response=answer,
            error=error,
            at=datetime.now(UTC),
        )

    def _reply_element(
        self, received: Received, message_type: str, message_id: str, trace_id: str
    ) -> etree._Element:
        """The party's example of ``message_type``, made the answer to ``received``."""
        if self._examples is None:
            raise ConfigurationError(f"{self.party}: no examples folder to answer from")
        # Exactly <type>.json or <type>.xml: <type>.invalid-*.json are counter-examples.
        names = (f"{message_type}.json", f"{message_type}.xml")
        examples = [self._examples / name for name in names if (self._examples / name).is_file()]
        if len(examples) != 1:
            raise ConfigurationError(
                f"{self._examples}: expected one example {message_type}.(json|xml),"
                f" found {len(examples)}"
            )
        data = examples[0].read_bytes()
        if self._wsdl is not None:
            element, _ = soap_payload(parse_xml(data))
        else:
            element = self.format.read(data)
        profile = self.profile
        profile.message_id.write(element, message_id)
        profile.subject.write(element, received.subject)
        profile.correlation.write(element, received.message_id)
        if profile.sent_at is not None:
            profile.sent_at.write(element, _now_iso())
        if profile.trace is not None:
            profile.trace.write(element, trace_id)
        self.format.schema.validate(element)
        actual = self.format.message_type(element)
        if actual != message_type:
            raise ConfigurationError(f"{examples[0]} is a {actual}, not a {message_type}")
        return element

    def _request(
        self, element: etree._Element, message_id: str, trace_id: str
    ) -> tuple[str, bytes, dict[str, str]]:
        hub = self.hub_url
        if not hub:
            raise ConfigurationError(f"{self.party}: the hub's URL is not known yet")
        headers = {"BelGov-Trace-Id": trace_id, "Idempotency-Key": message_id}
        if self._hub_wsdl is not None:
            operation = self._hub_wsdl.operation_for(element)
            headers["Content-Type"] = operation.content_type
            if operation.version == "1.1":  # SOAP 1.2's action is in the Content-Type
                headers["SOAPAction"] = f'"{operation.soap_action}"'
            envelope = build_envelope(element, version=operation.version)
            if self._signer is not None:
                envelope = wssec.sign_envelope(envelope, self._signer)
            return hub.rstrip("/") + HUB_SOAP_PATH, envelope, headers
        headers["Content-Type"] = self.profile.content_type
        body = self.format.write(element)
        if self._signer is not None:
            headers[jws.HEADER] = jws.sign_detached(body, self._signer)
        return hub.rstrip("/") + HUB_REST_PATH, body, headers


def _header_text(header: etree._Element | None, name: str) -> str | None:
    if header is None:
        return None
    value = header.findtext(f"{{{HUB_HEADER_NS}}}{name}")
    return value.strip() if value else None


def _check_media_type(request: Request, expected: str) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    wanted = expected.split(";", maxsplit=1)[0].strip().lower()
    suffix = "+" + wanted.rpartition("/")[2]
    if media_type != wanted and not media_type.endswith(suffix):
        raise UnsupportedMediaTypeError(f"expected {wanted}, got {media_type or 'none'}")


def _with_retry_after(response: Response, value: str | None) -> Response:
    if value is not None:
        response.headers["Retry-After"] = value
    return response


def _json(status: int, content: Mapping[str, Any]) -> Response:
    return Response(json.dumps(content).encode(), status, media_type="application/json")


def _problem(
    status: int, title: str, detail: str, *, code: str | None = None, path: str | None = None
) -> Response:
    """RFC 9457 problem details."""
    problem: dict[str, Any] = {
        "type": f"urn:guichet:problem:{code}" if code else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if path:
        problem["path"] = path
    return Response(json.dumps(problem).encode(), status, media_type="application/problem+json")


_FaultCode = Literal["Client", "Server", "VersionMismatch"]


def _fault(
    code: _FaultCode, string: str, version: SoapVersion = "1.1", *, status: int | None = None
) -> Response:
    """A SOAP Fault of ``version`` (``Client``/``env:Sender``: the sender must change the
    message), with ``status`` or else the binding's HTTP status."""
    content, default = soap_fault(code, string, version)
    return Response(content, status or default, media_type=soap_content_type(version))


def _now() -> datetime:
    return datetime.now(UTC)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# All of them


class Sandbox:
    """One back office per party, each on its own HTTPS server with the party's certificate.

    ``with Sandbox(mappings, pki, ["be-vlg-wse"], home / "examples") as sandbox:`` then deliver to
    ``sandbox.endpoints[party]`` (REST: the base URL; SOAP: the URL to POST to) and look at
    ``sandbox.offices[party]``. ``hub_url`` may be set after start: the hub often starts later.
    """

    def __init__(
        self,
        mappings: MappingSet,
        pki: DevPki,
        parties: Iterable[str],
        examples_dir: Path,
        *,
        hub_url: str | None = None,
        respond: bool = True,
        ports: Mapping[str, int] | None = None,
    ) -> None:
        """``ports``: where each office listens (default: a free port each)."""
        profiles = load_profiles(examples_dir / PROFILES_FILE, mappings)
        self.offices: dict[str, BackOffice] = {}
        self._servers: dict[str, ServerThread] = {}
        for party in parties:
            if party not in profiles:
                raise ConfigurationError(f"{examples_dir / PROFILES_FILE} has no [office.{party}]")
            identity = pki.party(party)
            office = BackOffice(
                mappings.party(party),
                profiles[party],
                identity=identity,
                examples_dir=examples_dir,
                hub_url=hub_url,
                respond=respond,
                hub_certificate=pki.hub_cert,
            )
            self.offices[party] = office
            port = (ports or {}).get(party, 0)
            self._servers[party] = ServerThread(office.app, tls=identity, port=port)
        self._hub_url = hub_url
        self.endpoints: dict[str, str] = {}

    @property
    def hub_url(self) -> str | None:
        return self._hub_url

    @hub_url.setter
    def hub_url(self, url: str | None) -> None:
        self._hub_url = url
        for office in self.offices.values():
            office.hub_url = url

    def start(self) -> None:
        try:
            for party, server in self._servers.items():
                server.start()
                soap = self.offices[party].profile.protocol == "soap"
                self.endpoints[party] = server.url + "/" if soap else server.url
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every server (no more receptions), then let reply chains end (bounded)."""
        errors: list[BaseException] = []
        for server in self._servers.values():
            try:
                server.stop()
            except RuntimeError as exc:
                errors.append(exc)
        for office in self.offices.values():
            office.close()
        if errors:
            raise errors[0]

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
