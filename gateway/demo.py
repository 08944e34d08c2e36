"""``guichet demo``: one single-permit case across the hub and the sandbox back offices.

The hub and the three back offices run as real HTTPS servers with mutual TLS on free loopback
ports, on a fresh SQLite data dir. The portal files an application for a workplace in Ghent;
Flanders (REST/JSON) decides admissibility and work; the Immigration Office (SOAP 1.1) decides
residence; the portal notifies and says so. The demo prints the timeline, checks the evidence log
and exits 0 only if every exchange was validated, sealed and delivered.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gateway.audit import VerifyReport, verify_log
from gateway.testing import RunningHub, running_hub, wait_until

__all__ = ["DemoResult", "run_demo"]

# The messages one complete case is made of, in the order of the procedure.
CASE_TYPES = (
    "application.submitted",
    "admissibility.decided",
    "workAuthorisation.decided",
    "residence.decided",
    "status.updated",
)


@dataclass
class DemoResult:
    subject: str
    messages: int
    deliveries: int
    delivered: int
    report: VerifyReport

    @property
    def ok(self) -> bool:
        return (
            self.report.ok
            and self.messages == len(CASE_TYPES)
            and self.deliveries == self.delivered > 0
        )


def _format(protocol: str, content_type: str) -> str:
    return "SOAP 1.1" if protocol == "soap11" else content_type.split(";", maxsplit=1)[0]


def run_demo(data_dir: Path | None, out: TextIO, timeout: float = 40.0) -> DemoResult:
    with tempfile.TemporaryDirectory(prefix="guichet-demo-") as scratch:
        directory = data_dir or Path(scratch)
        with running_hub(directory) as running:
            return _play(running, out, timeout)


def _play(running: RunningHub, out: TextIO, timeout: float) -> DemoResult:
    hub = running.hub
    home = hub.config.home
    example = home / "examples" / "be-platform" / "application.submitted.json"
    out.write(f"Guichet demo — hub at {running.url}, data in {hub.config.data_dir}\n")
    for party, url in running.sandbox.endpoints.items():
        out.write(f"  back office {party:<12} {hub.parties[party].protocol:<7} {url}\n")
    started = time.monotonic()
    with running.client("be-platform") as client:
        response = client.post(
            "/v1/messages",
            content=example.read_bytes(),
            headers={"Content-Type": "application/json"},
        )
    if response.status_code != 202:
        out.write(f"the hub refused the application: {response.status_code} {response.text}\n")
        raise SystemExit(1)
    first = response.json()
    subject = hub.store.message(first["messageId"]).subject  # type: ignore[union-attr]

    def case_done() -> bool:
        rows = hub.store.messages_for_subject(subject)
        if [r.type for r in rows] != list(CASE_TYPES):
            return False
        return all(d.state == "delivered" for r in rows for d in hub.store.deliveries(r.id))

    finished = wait_until(case_done, timeout)
    elapsed = time.monotonic() - started
    rows = hub.store.messages_for_subject(subject)
    out.write(f"\nCase {subject}: {len(rows)} messages in {elapsed:.2f} s\n\n")
    deliveries = delivered = 0
    for row in rows:
        leaf = hub.store.leaves(row.leaf_index, row.leaf_index + 1)[0]
        record = json.loads(leaf.record)
        inbound = record["inbound"]
        fmt = _format(inbound["transport"], inbound["contentType"])
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
            deliveries += 1
            delivered += delivery.state == "delivered"
            wire = _format(hub.parties[delivery.receiver].protocol, out_record["contentType"])
            out.write(
                f"    out: {delivery.receiver:<12} {wire:<17}"
                f" valid against {out_record['schema']['id']:<12} {delivery.state}"
                f" {delivery.delivered_at or ''} (attempt {delivery.attempts})\n"
            )
        out.write("\n")
    checkpoint = hub.checkpoint()
    report = verify_log(hub.store.leaves(), hub.store.checkpoints(), hub.signer.certificate)
    out.write(
        f"Evidence log: {report.leaves} leaves, checkpoint at size {checkpoint.tree_size}, root"
        f" {checkpoint.root_hash[:16]}…: {'verified' if report.ok else 'FAILED'}\n"
    )
    for problem in report.problems:
        out.write(f"  {problem}\n")
    result = DemoResult(subject, len(rows), deliveries, delivered, report)
    if not finished:
        out.write(f"the case did not complete within {timeout:.0f} s\n")
    out.write("demo: OK\n" if result.ok else "demo: FAILED\n")
    return result
