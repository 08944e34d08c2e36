"""``guichet validate FILE --party ID``: what the hub would say of one message, offline.

Runs the stages that need no store — hardened parse, the sender's schema (every error, not only
the first), authorisation of the type, the mapping to canonical, the canonical schema and the
domain checks — and reports each problem as the back office would receive it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import pipeline
from gateway.config import PartyRegistry
from gateway.errors import GatewayError, SchemaValidationError, problem_body
from gateway.mapping import MappingSet
from gateway.namespaces import SOAP11_NS
from gateway.signatures import SignatureVerifier
from gateway.xml import (
    DEFAULT_LIMITS,
    SOAP12_NS,
    parse_xml,
    soap_content_type,
    soap_payload,
    soap_version,
)

__all__ = ["FileReport", "check_file"]


@dataclass
class FileReport:
    party: str
    message_type: str | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _all_schema_errors(
    party_id: str, body: bytes, mappings: MappingSet, soap: bool
) -> list[dict[str, Any]]:
    """Every error libxml2 reports against the sender's schema (the hub returns the first)."""
    party = mappings.party(party_id)
    element = soap_payload(parse_xml(body))[0] if soap else party.read(body)
    schema_file = party.schema.file_for(element)
    if schema_file.lxml.validate(element):
        return []
    problems = []
    for entry in schema_file.lxml.error_log:  # type: ignore[attr-defined]
        path = party.binding.pointer(entry.path) if party.binding else entry.path
        error = SchemaValidationError(
            entry.message, path=path, line=entry.line or None, schema_id=party.schema.schema_id
        )
        problems.append(problem_body(error))
    return problems


def check_file(
    path: Path, party_id: str, mappings: MappingSet, parties: PartyRegistry
) -> FileReport:
    report = FileReport(party_id)
    body = path.read_bytes()
    soap = False
    transport: pipeline.Transport = "rest"
    if body.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        content_type = "application/json"
    else:
        content_type = "application/xml"
        try:
            root = parse_xml(body)
        except GatewayError as error:
            report.problems.append(problem_body(error))
            return report
        if root.tag in (f"{{{SOAP11_NS}}}Envelope", f"{{{SOAP12_NS}}}Envelope"):
            version = soap_version(root)
            soap, transport = True, ("soap11" if version == "1.1" else "soap12")
            content_type = soap_content_type(version)
    inbound = pipeline.InboundMessage(
        sender=party_id,
        body=body,
        content_type=content_type,
        transport=transport,
        trace_id="offline-check",
        received_at="1970-01-01T00:00:00Z",
    )
    try:
        # A file on disk has no one on a connection to check its signature against: a
        # WS-Security header is checked for its shape and signature only where present.
        unsigned = SignatureVerifier.as_of(parties, datetime.now(UTC), required=False)
        validated = pipeline.validate(inbound, mappings, DEFAULT_LIMITS, unsigned)
        report.message_type = validated.message_type
        pipeline.to_canonical(pipeline.authorise(validated, parties), mappings)
    except SchemaValidationError as error:
        if error.code == "schema.invalid":
            report.problems.extend(_all_schema_errors(party_id, body, mappings, soap))
        else:  # not of this party's schema at all
            report.problems.append(problem_body(error))
    except GatewayError as error:
        report.problems.append(problem_body(error))
    return report


def render(report: FileReport) -> str:
    if report.ok:
        return f"valid: {report.message_type}, which the hub accepts from {report.party}"
    lines = [f"refused: {len(report.problems)} problem(s)"]
    lines.extend(json.dumps(problem, ensure_ascii=False) for problem in report.problems)
    return "\n".join(lines)
