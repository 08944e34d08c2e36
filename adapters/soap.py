"""SOAP 1.1 and 1.2 delivery (document/literal): the payload goes in an envelope, to the
receiver's WSDL.

The receiver's WSDL is read once, with zeep, from local files only (:class:`Wsdl`): it says which
operation takes which payload element, in which SOAP version (the binding's), under which action,
and what the reply must be. The hub's own ids ride in a SOAP Header (``h:MessageId``,
``h:TraceId`` in ``urn:be:guichet:hub:1``) so the back office can deduplicate without reading the
payload; the WSDL's address is never used, the configured endpoint is.

How each version travels (the WSDL's binding decides, per operation)::

    SOAP 1.1   Content-Type: text/xml; charset=utf-8           SOAPAction: "<soapAction>"
    SOAP 1.2   Content-Type: application/soap+xml; charset=utf-8; action="<soapAction>"

A WSDL that binds one operation in both versions is called in the version the adapter prefers:
``soap11`` (:class:`SoapAdapter`) 1.1, ``soap12`` (:class:`Soap12Adapter`) 1.2.

How a reply is read::

    HTTP 408, 425, 429 (a throttle: whatever Fault comes with it)         → failed
    SOAP 1.1 Fault *:Client (Client.*), MustUnderstand, VersionMismatch   → rejected
    SOAP 1.2 Fault env:Sender, MustUnderstand, VersionMismatch,
                   DataEncodingUnknown                                   → rejected
    any other Fault (SOAP 1.1 Server …, SOAP 1.2 env:Receiver)           → failed
    2xx, the Body holds the operation's output element in the request's
         SOAP version, and zeep reads it                                 → delivered
    2xx, anything else (not XML, not an envelope, another element)       → failed
    any other status without a Fault                                     → classify(status)

A 429 or 503 (with or without a Fault) that is retried gives its ``Retry-After`` to the outbox.

Replies are parsed with the hub's hardened parser (``gateway.xml.parse_xml``), never by zeep's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

import httpx
from lxml import etree
from zeep.exceptions import Error as ZeepError
from zeep.settings import Settings
from zeep.transports import Transport
from zeep.wsdl import Document
from zeep.wsdl.bindings.soap import Soap11Binding, Soap12Binding

from adapters import BaseAdapter, Outbound, Outcome, ReceiverConfig, Reply, classify, retry_after
from gateway import wssec
from gateway.errors import ConfigurationError, GatewayError, ParseError, UnknownMessageTypeError
from gateway.namespaces import HUB_NS
from gateway.xml import (
    SOAP11_NS,
    SOAP12_NS,
    SOAP_ENVELOPE_NS,
    SoapVersion,
    parse_xml,
    soap_content_type,
    soap_payload,
)

__all__ = [
    "HUB_HEADER_NS",
    "Soap12Adapter",
    "SoapAdapter",
    "SoapFault",
    "SoapOperation",
    "SoapVersion",
    "Wsdl",
    "build_envelope",
    "soap_fault_of",
]

HUB_HEADER_NS = HUB_NS  # the hub's own SOAP headers
# Fault codes after which sending the same envelope again cannot succeed: SOAP 1.1's Client (and
# its dotted refinements), SOAP 1.2's Sender and DataEncodingUnknown, both versions' MustUnderstand
# and VersionMismatch.
_PERMANENT_FAULTS = ("Client", "Sender", "MustUnderstand", "VersionMismatch", "DataEncodingUnknown")


# ---------------------------------------------------------------------------------------------
# The WSDL, read once


class _LocalFilesOnly(Transport):
    """A zeep transport that reads files under one folder and refuses everything else.

    A WSDL is configuration, but an ``xs:import`` pointing at a URL would make loading it a network
    call (and an SSRF path for whoever can edit it): only local files under ``root`` are read.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(timeout=1, operation_timeout=1)  # type: ignore[no-untyped-call]
        self._root = root.resolve()

    def load(self, url: str) -> bytes:
        parsed = urlparse(url)
        if parsed.scheme not in ("", "file"):
            raise ConfigurationError(f"WSDL loading refuses the remote document {url}")
        path = Path(parsed.path if parsed.scheme == "file" else url).resolve()
        if not path.is_relative_to(self._root):
            raise ConfigurationError(f"WSDL loading refuses {path}: outside {self._root}")
        return path.read_bytes()

    def get(self, address: str, params: Any, headers: Any) -> Any:
        raise ConfigurationError(f"this transport makes no HTTP calls (GET {address})")

    def post(self, address: str, message: Any, headers: Any) -> Any:
        raise ConfigurationError(f"this transport makes no HTTP calls (POST {address})")


@dataclass(frozen=True)
class SoapOperation:
    """One document/literal operation of a SOAP 1.1 or 1.2 binding."""

    name: str
    soap_action: str
    input_element: str  # Clark name of the Body's payload element in the request
    output_element: str | None  # … and in the reply (None for a one-way operation)
    _zeep: Any = field(repr=False, compare=False)
    version: SoapVersion = "1.1"  # of its binding: requests and replies are in this version

    @property
    def content_type(self) -> str:
        """The Content-Type of a request (SOAP 1.2: with the action as its parameter)."""
        return soap_content_type(self.version, self.soap_action or None)

    def check_output(self, envelope: etree._Element) -> etree._Element:
        """The reply's payload if it is this operation's output as the WSDL describes it.

        zeep reads the envelope with the operation's output message (strict: an unexpected element
        raises); the required top-level children must be there. A reply in the other SOAP version
        than the operation's is refused (``soap.version-mismatch``). Raises ``ParseError``.
        """
        payload, _ = soap_payload(envelope, expect=self.version)
        if payload.tag != self.output_element:
            raise ParseError(
                f"{self.name} answers {self.output_element}, the reply holds {payload.tag}",
                code="soap.malformed",
            )
        output = self._zeep.output
        try:
            value = output.deserialize(envelope)
        except (ZeepError, ValueError, TypeError) as exc:
            raise ParseError(
                f"reply to {self.name} does not match the WSDL: {exc}", code="soap.malformed"
            ) from exc
        missing = [
            name
            for name, element in output.body.type.elements
            if element.min_occurs and _member(value, name) is None
        ]
        if missing:
            raise ParseError(
                f"reply to {self.name} lacks {', '.join(missing)}", code="soap.malformed"
            )
        return payload

    def serialize_output(self, values: Mapping[str, Any]) -> bytes:
        """A reply envelope (in the operation's SOAP version) carrying this operation's output,
        built by zeep from the WSDL.

        For servers speaking this WSDL (the sandbox back offices); ``values`` are the output
        element's children by name. Raises ``ConfigurationError`` for a one-way operation or
        values the output element does not have.
        """
        if self.output_element is None:
            raise ConfigurationError(f"{self.name} is one-way: it has no output")
        try:
            message = self._zeep.output.serialize(**values)
        except (ZeepError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"cannot build the output of {self.name}: {exc}") from exc
        return etree.tostring(message.content, encoding="UTF-8", xml_declaration=True)


def _member(value: Any, name: str) -> Any:
    try:
        return value[name]
    except (KeyError, TypeError, IndexError):
        return None


@dataclass(frozen=True)
class Wsdl:
    """A WSDL's SOAP 1.1 and 1.2 operations, by the element their input carries
    (document/literal).

    ``operations`` has one operation per input element: where the WSDL binds an element in both
    SOAP versions, the one of the version preferred at load. ``by_version`` has them all.
    """

    path: Path
    operations: Mapping[str, SoapOperation]  # input element (Clark) → operation
    addresses: tuple[str, ...]  # soap:address locations, informative only
    by_version: Mapping[SoapVersion, Mapping[str, SoapOperation]] = field(
        default_factory=dict, repr=False
    )

    @property
    def versions(self) -> frozenset[SoapVersion]:
        """The SOAP versions the WSDL binds."""
        return frozenset(version for version, found in self.by_version.items() if found)

    @classmethod
    def load(cls, path: Path, root: Path | None = None, *, prefer: SoapVersion = "1.1") -> Wsdl:
        """Read ``path`` and what it imports, from files under ``root`` (default: its folder).

        Raises ``ConfigurationError`` when the WSDL cannot be read, imports a remote document, has
        no SOAP 1.1 or 1.2 binding, or two operations of one version take the same input element
        (dispatch would be ambiguous).
        """
        settings = Settings(
            strict=True,
            xml_huge_tree=False,
            forbid_dtd=True,
            forbid_entities=True,
            forbid_external=True,
        )
        transport = _LocalFilesOnly(root or path.parent)
        try:
            # zeep annotates ``transport`` as a class, but uses (and documents) an instance.
            document = Document(
                str(path.resolve()),
                transport,  # type: ignore[arg-type]
                settings=settings,
            )
        except ConfigurationError:
            raise
        except (ZeepError, etree.Error, OSError, ValueError, KeyError) as exc:
            raise ConfigurationError(f"{path}: not a usable WSDL: {exc}") from exc
        by_version: dict[SoapVersion, dict[str, SoapOperation]] = {"1.1": {}, "1.2": {}}
        for binding in document.bindings.values():
            # Soap12Binding is no subclass of Soap11Binding: both are SoapBinding's.
            if isinstance(binding, Soap12Binding):
                version: SoapVersion = "1.2"
            elif isinstance(binding, Soap11Binding):
                version = "1.1"
            else:
                continue  # an HTTP GET/POST binding: not SOAP
            operations = by_version[version]
            for name, operation in binding.all().items():  # type: ignore[no-untyped-call]
                body = getattr(operation.input, "body", None)
                if body is None or getattr(body, "qname", None) is None:
                    raise ConfigurationError(
                        f"{path}: operation {name} is not document/literal with one body element"
                    )
                tag = body.qname.text
                if tag in operations and operations[tag].name != name:
                    raise ConfigurationError(
                        f"{path}: {operations[tag].name} and {name} both take {tag}"
                    )
                output_body = getattr(operation.output, "body", None) if operation.output else None
                operations[tag] = SoapOperation(
                    name=name,
                    soap_action=operation.soapaction or "",
                    input_element=tag,
                    output_element=output_body.qname.text if output_body is not None else None,
                    _zeep=operation,
                    version=version,
                )
        other: SoapVersion = "1.2" if prefer == "1.1" else "1.1"
        merged = {**by_version[other], **by_version[prefer]}
        if not merged:
            raise ConfigurationError(f"{path}: no SOAP 1.1 or 1.2 document/literal operation")
        addresses = tuple(
            str(port.binding_options.get("address", ""))
            for service in document.services.values()
            for port in service.ports.values()
        )
        return cls(path=path, operations=merged, addresses=addresses, by_version=by_version)

    def operation_for(
        self, payload: etree._Element, version: SoapVersion | None = None
    ) -> SoapOperation:
        """The operation that takes this payload element (in ``version``, when given);
        ``UnknownMessageTypeError`` if none."""
        operations = self.operations if version is None else self.by_version.get(version, {})
        try:
            return operations[payload.tag]
        except KeyError:
            what = "no operation" if version is None else f"no SOAP {version} operation"
            raise UnknownMessageTypeError(
                f"{self.path.name} has {what} taking {payload.tag}", path="/"
            ) from None


# ---------------------------------------------------------------------------------------------
# Envelopes and faults


def build_envelope(
    payload: etree._Element,
    headers: Mapping[str, str] | None = None,
    version: SoapVersion = "1.1",
) -> bytes:
    """A SOAP envelope of ``version`` around ``payload``; ``headers`` become ``h:<name>`` Header
    entries."""
    namespace = SOAP_ENVELOPE_NS[version]
    prefix = "soap" if version == "1.1" else "env"
    envelope = etree.Element(f"{{{namespace}}}Envelope", nsmap={prefix: namespace})
    if headers:
        header = etree.SubElement(envelope, f"{{{namespace}}}Header")
        for name, value in headers.items():
            entry = etree.SubElement(
                header, f"{{{HUB_HEADER_NS}}}{name}", nsmap={"h": HUB_HEADER_NS}
            )
            entry.text = value
    body = etree.SubElement(envelope, f"{{{namespace}}}Body")
    # A copy: appending moves an lxml element out of its tree, the caller's stays untouched.
    body.append(copy.deepcopy(payload))
    return etree.tostring(envelope, encoding="UTF-8", xml_declaration=True)


@dataclass(frozen=True)
class SoapFault:
    """A SOAP Fault: ``code`` is the local part of a SOAP 1.1 faultcode (``Client``,
    ``Server.Busy``…) or of a SOAP 1.2 ``Code/Value`` (``Sender``, ``Receiver``…); ``string`` the
    faultstring or the first ``Reason/Text``."""

    code: str
    string: str
    version: SoapVersion = "1.1"

    @property
    def permanent(self) -> bool:
        """True when the sender must change the message: resending it cannot succeed."""
        return self.code.split(".", 1)[0] in _PERMANENT_FAULTS


def soap_fault_of(payload: etree._Element) -> SoapFault | None:
    """The Fault a Body payload is, or ``None`` when it is no SOAP 1.1 or 1.2 Fault.

    A fault code that cannot be read is taken for the receiver's (Server, Receiver): retried.
    """
    if payload.tag == f"{{{SOAP11_NS}}}Fault":
        # faultcode and faultstring are unqualified children in SOAP 1.1.
        raw_code = (payload.findtext("faultcode") or "").strip()
        return SoapFault(
            code=raw_code.rpartition(":")[2] or "Server",
            string=(payload.findtext("faultstring") or "").strip(),
        )
    if payload.tag == f"{{{SOAP12_NS}}}Fault":
        env = f"{{{SOAP12_NS}}}"
        raw_code = (payload.findtext(f"{env}Code/{env}Value") or "").strip()
        return SoapFault(
            code=raw_code.rpartition(":")[2] or "Receiver",
            string=(payload.findtext(f"{env}Reason/{env}Text") or "").strip(),
            version="1.2",
        )
    return None


# ---------------------------------------------------------------------------------------------
# The adapter


class SoapAdapter(BaseAdapter):
    """Delivers payloads to a SOAP back office described by its WSDL, in the SOAP version of each
    operation's binding (``prefer`` where the WSDL binds one in both)."""

    prefer: ClassVar[SoapVersion] = "1.1"

    def __init__(self, config: ReceiverConfig) -> None:
        super().__init__(config)
        if not config.wsdl:
            raise ConfigurationError(f"receiver {config.party}: a SOAP party needs a WSDL")
        # Imports may reach sibling folders of schemas/ (a shared hub.xsd), never beyond.
        self.wsdl = Wsdl.load(
            config.schema_dir / config.wsdl, root=config.schema_dir.parent, prefer=self.prefer
        )
        self._client = self._http_client()

    def _send(self, outbound: Outbound) -> Reply:
        try:
            payload = parse_xml(outbound.body)
            operation = self.wsdl.operation_for(payload)
        except GatewayError as exc:
            # The hub produced a body this receiver has no operation for: no retry will help.
            return Reply("rejected", None, b"", f"{exc.code}: {exc.detail}")
        envelope = build_envelope(
            payload,
            {"MessageId": outbound.message_id, "TraceId": outbound.trace_id},
            operation.version,
        )
        if self.config.signer is not None:
            envelope = wssec.sign_envelope(envelope, self.config.signer)
        headers = {"Content-Type": operation.content_type, "BelGov-Trace-Id": outbound.trace_id}
        if operation.version == "1.1":
            headers["SOAPAction"] = f'"{operation.soap_action}"'
        response = self._client.post(self.config.endpoint, content=envelope, headers=headers)
        outcome, detail = _outcome(operation, response)
        later = retry_after(response) if outcome == "failed" else None
        return Reply(outcome, response.status_code, response.content, detail, later)

    def close(self) -> None:
        self._client.close()


class Soap12Adapter(SoapAdapter):
    """The ``soap12`` adapter: the same, calling SOAP 1.2 where the WSDL binds both versions."""

    prefer: ClassVar[SoapVersion] = "1.2"


_NOT_NOW = frozenset({408, 425, 429})


def _outcome(operation: SoapOperation, response: httpx.Response) -> tuple[Outcome, str]:
    status = response.status_code
    try:
        envelope = parse_xml(response.content)
        payload, _ = soap_payload(envelope)
    except GatewayError as exc:
        if 200 <= status < 300:
            return "failed", f"malformed reply: {exc.detail}"
        return classify(status), f"HTTP {status} {response.reason_phrase}".rstrip()
    fault = soap_fault_of(payload)
    if fault is not None:
        # 408, 425 and 429 say "not now" whatever the Fault says: the message may be right.
        permanent = fault.permanent and status not in _NOT_NOW
        outcome: Outcome = "rejected" if permanent else "failed"
        return outcome, f"SOAP Fault {fault.code}: {fault.string}"
    if not 200 <= status < 300:
        return classify(status), f"HTTP {status} {response.reason_phrase}".rstrip()
    if operation.output_element is None:
        return "delivered", ""
    try:
        operation.check_output(envelope)
    except ParseError as exc:
        return "failed", f"malformed reply: {exc.detail}"
    return "delivered", ""
