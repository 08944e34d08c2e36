"""``guichet demo``: cases of the procedure across the hub and the sandbox back offices.

The hub and every party's back office run as real HTTPS servers with mutual TLS on free loopback
ports, on a fresh SQLite data dir. In each scenario the portal files a message that opens a case
(its case reference, message id and, where the scenario says, the workplace rewritten through the
portal's own mappings); the back offices answer as ``examples/sandbox.toml`` scripts them. The
demo prints each case's timeline, checks the evidence log and exits 0 only if every exchange of
every scenario was validated, sealed and delivered.

``--scenario first-flanders`` (the default) runs one single-permit case; ``--scenario all`` runs
one case per procedure: a first application in each of the four regions, a renewal, a change of
employer, a withdrawal, a work permit and a professional card.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from lxml import etree

from gateway.audit import VerifyReport, verify_log

if TYPE_CHECKING:  # the hub and its sandbox are loaded when a demo runs, not to list scenarios
    from gateway.mapping import MappingSet
    from gateway.testing import RunningHub

__all__ = ["CASE_TYPES", "SCENARIOS", "DemoResult", "Scenario", "demo_log_level", "run_demo"]

PORTAL = "be-platform"

# A first single-permit application, once complete (in any order: the Immigration Office and the
# portal answer concurrently). The region checks admissibility, forwards the file and decides on
# work; the Immigration Office decides on residence and reports the card; the portal notifies.
CASE_TYPES = (
    "application.submitted",
    "admissibility.decided",
    "application.forwarded",
    "workAuthorisation.decided",
    "residence.decided",
    "card.issued",
    "status.updated",
)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    opener: str  # the type the portal files; examples/be-platform/<opener>.json
    expect: tuple[str, ...]  # every message of the case once complete, in any order
    # the workplace, as (canonical path of its address, postcode, municipality)
    workplace: tuple[str, str, str] | None = None
    follow_up: str | None = None  # a message the portal sends in the same case once accepted


def _first(region: str, postcode: str, municipality: str) -> Scenario:
    return Scenario(
        f"first-{region}",
        f"single permit, first application, workplace in {municipality}",
        "application.submitted",
        CASE_TYPES,
        ("c:applicationSubmitted/c:employer/c:establishmentUnit/c:address", postcode, municipality),
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        _first("flanders", "9000", "Gent"),
        _first("wallonia", "4000", "Liège"),
        _first("brussels", "1000", "Bruxelles"),
        _first("german-speaking", "4700", "Eupen"),
        Scenario(
            "renewal",
            "renewal of a single permit; the region approves work (annex 49)",
            "renewal.submitted",
            ("renewal.submitted", "renewal.workApproved"),
        ),
        Scenario(
            "employer-change",
            "change of employer by notification; the region takes note",
            "employerChange.notified",
            ("employerChange.notified", "status.updated"),
        ),
        Scenario(
            "withdrawal",
            "the employer withdraws an application it has just filed; the region, which had"
            " already answered it, tells where the case stands",
            "application.submitted",
            (*CASE_TYPES, "application.withdrawn", "status.updated"),
            ("c:applicationSubmitted/c:employer/c:establishmentUnit/c:address", "5000", "Namur"),
            follow_up="application.withdrawn",
        ),
        Scenario(
            "work-permit",
            "work permit outside the single permit (phase 3)",
            "workPermit.submitted",
            ("workPermit.submitted", "workPermit.decided"),
        ),
        Scenario(
            "professional-card",
            "professional card for a self-employed worker (phase 3)",
            "professionalCard.submitted",
            ("professionalCard.submitted", "professionalCard.decided"),
        ),
    )
}


@dataclass
class CaseResult:
    scenario: Scenario
    subject: str
    types: list[str] = field(default_factory=list)
    deliveries: int = 0
    delivered: int = 0
    finished: bool = False
    refused: bool = False  # the hub refused what the portal filed
    scenario_parties: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return (
            self.finished
            and Counter(self.types) == Counter(self.scenario.expect)
            and self.deliveries == self.delivered > 0
        )


@dataclass
class DemoResult:
    cases: list[CaseResult]
    report: VerifyReport

    @property
    def ok(self) -> bool:
        return self.report.ok and bool(self.cases) and all(c.ok for c in self.cases)

    @property
    def parties(self) -> set[str]:
        """Every party that sent or received a message in the demo."""
        return {p for c in self.cases for p in c.scenario_parties}


def demo_log_level() -> str:
    """The demo's log level: ``log_level`` when the operator set it (``GUICHET_LOG_LEVEL`` or
    ``guichet.toml``), else ``warning``, so that the timeline is not lost among log lines."""
    from gateway.config import Settings

    settings = Settings()
    return settings.log_level if "log_level" in settings.model_fields_set else "warning"


def run_demo(
    data_dir: Path | None,
    out: TextIO,
    scenarios: Sequence[str] = ("first-flanders",),
    timeout: float = 60.0,
) -> DemoResult:
    chosen = [SCENARIOS[name] for name in scenarios]
    with tempfile.TemporaryDirectory(prefix="guichet-demo-") as scratch:
        directory = data_dir or Path(scratch)
        from gateway.testing import running_hub

        with running_hub(directory) as running:
            return _play(running, chosen, out, timeout)


def _opening_message(
    running: RunningHub, mappings: MappingSet, scenario: Scenario, subject: str, message: str
) -> bytes:
    """The portal's example of the scenario's type, made a new case: its message id and case
    reference (and workplace) rewritten where the portal's mappings put them."""
    home = running.hub.config.home
    portal = mappings.party(PORTAL)
    element = portal.read((home / "examples" / PORTAL / f"{message}.json").read_bytes())
    values = {
        "c:envelope/c:id": str(uuid.uuid4()),
        "c:envelope/c:subject": subject,
    }
    if scenario.workplace is not None and message == scenario.opener:
        address, postcode, municipality = scenario.workplace
        values[f"{address}/c:postcode"] = postcode
        values[f"{address}/c:municipality"] = municipality
    for canonical, value in values.items():
        where = mappings.party_field(PORTAL, canonical)
        nodes = element.xpath(where, namespaces=portal.namespaces) if where else []
        if not isinstance(nodes, list) or len(nodes) != 1:
            raise LookupError(f"the portal's mappings give no single place for {canonical}")
        node = nodes[0]
        assert isinstance(node, etree._Element)
        node.text = value
    return portal.write(element)


def _file(running: RunningHub, body: bytes, out: TextIO) -> bool:
    with running.client(PORTAL) as client:
        response = client.post(
            "/v1/messages", content=body, headers={"Content-Type": "application/json"}
        )
    if response.status_code != 202:
        out.write(f"  the hub refused it: {response.status_code} {response.text}\n")
    return response.status_code == 202


def _play(
    running: RunningHub, scenarios: list[Scenario], out: TextIO, timeout: float
) -> DemoResult:
    hub = running.hub
    mappings = hub.mappings
    out.write(f"Guichet demo — hub at {running.url}, data in {hub.config.data_dir}\n")
    for party, url in running.sandbox.endpoints.items():
        out.write(f"  back office {party:<12} {hub.parties[party].protocol:<7} {url}\n")
    started = time.monotonic()
    cases: list[CaseResult] = []
    for scenario in scenarios:
        subject = f"DEMO-{scenario.name}-{uuid.uuid4().hex[:8]}"
        case = CaseResult(scenario, subject)
        cases.append(case)
        messages = [scenario.opener, *([scenario.follow_up] if scenario.follow_up else [])]
        for message in messages:
            body = _opening_message(running, mappings, scenario, subject, message)
            if not _file(running, body, out):
                case.refused = True
                break

    def complete(case: CaseResult) -> bool:
        if case.refused:
            return False
        rows = hub.store.messages_for_subject(case.subject)
        if Counter(r.type for r in rows) != Counter(case.scenario.expect):
            return False
        return all(d.state == "delivered" for r in rows for d in hub.store.deliveries(r.id))

    from gateway.testing import wait_until

    wait_until(lambda: all(complete(c) for c in cases if not c.refused), timeout)
    elapsed = time.monotonic() - started
    for case in cases:
        case.finished = complete(case)
        _timeline(running, case, out)
    checkpoint = hub.checkpoint()
    report = verify_log(hub.store.leaves(), hub.store.checkpoints(), hub.signer.certificate)
    result = DemoResult(cases, report)
    out.write(
        f"{len(cases)} case(s), {sum(len(c.types) for c in cases)} messages,"
        f" {sum(c.delivered for c in cases)} deliveries in {elapsed:.2f} s;"
        f" parties involved: {', '.join(sorted(result.parties))}\n"
        f"Evidence log: {report.leaves} leaves, checkpoint at size {checkpoint.tree_size}, root"
        f" {checkpoint.root_hash[:16]}…: {'verified' if report.ok else 'FAILED'}\n"
    )
    for problem in report.problems:
        out.write(f"  {problem}\n")
    for case in cases:
        if not case.ok:
            out.write(
                f"scenario {case.scenario.name}: the hub refused the filing\n"
                if case.refused
                else f"scenario {case.scenario.name} did not complete within {timeout:.0f} s: has"
                f" {sorted(case.types)}, expects {sorted(case.scenario.expect)}\n"
            )
    out.write("demo: OK\n" if result.ok else "demo: FAILED\n")
    return result


def _format(protocol: str, content_type: str) -> str:
    """How a message travelled: its SOAP version, or its REST media type."""
    version = {"soap11": "1.1", "soap12": "1.2"}.get(protocol)
    return f"SOAP {version}" if version else content_type.split(";", maxsplit=1)[0]


def _timeline(running: RunningHub, case: CaseResult, out: TextIO) -> None:
    hub = running.hub
    rows = hub.store.messages_for_subject(case.subject)
    out.write(f"\n== {case.scenario.name}: {case.scenario.title}\n")
    out.write(f"Case {case.subject}: {len(rows)} messages\n\n")
    for row in rows:
        case.types.append(row.type)
        leaf = hub.store.leaves(row.leaf_index, row.leaf_index + 1)[0]
        record = json.loads(leaf.record)
        inbound = record["inbound"]
        fmt = _format(inbound["transport"], inbound["contentType"])
        case.scenario_parties.add(row.sender)
        out.write(
            f"{row.received_at}  {row.sender} ─▶ {', '.join(record['receivers'])}\n"
            f"    {row.type}  id {row.id}  trace {row.trace_id}\n"
            f"    in:  {fmt}, valid against {inbound['schema']['id']} "
            f"(sha256 {inbound['schema']['sha256'][:12]}…) → canonical "
            f"(mapping {record['canonical']['mapping'][0]['file']})\n"
            f"    sealed as leaf #{row.leaf_index} (hash {leaf.leaf_hash.hex()[:16]}…, signed)\n"
        )
        for out_record, delivery in zip(
            record["outbound"], hub.store.deliveries(row.id), strict=True
        ):
            case.deliveries += 1
            case.delivered += delivery.state == "delivered"
            case.scenario_parties.add(delivery.receiver)
            wire = _format(hub.parties[delivery.receiver].protocol, out_record["contentType"])
            out.write(
                f"    out: {delivery.receiver:<12} {wire:<17}"
                f" valid against {out_record['schema']['id']:<12} {delivery.state}"
                f" {delivery.delivered_at or ''} (attempt {delivery.attempts})\n"
            )
        out.write("\n")
