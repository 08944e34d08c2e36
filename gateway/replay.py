"""Replay: run each logged inbound message through the pipeline again, with the versions of the day.

For every ``exchange.accepted`` record of a range of the log::

    inbound body ◀─ payload store, by the digest the record gives    (gone: not replayable)
    pinned home  ◀─ the artefacts of the configuration.loaded record in force at that leaf
                    (every schema, mapping and parties file, by SHA-256), written to a temporary
                    folder and loaded as the hub loads its own — never today's files
    parse + sender's schema ─▶ authorise ─▶ map to canonical + canonical schema + domain checks
        ─▶ for each receiver of the record: map out + receiver's schema
    every digest compared with the record: inbound body, sender schema, canonical mapping files,
    canonical schema, canonical message; per receiver its mapping files, schema, content type
    and outbound body

Each message gives one line: ``ok``, ``mismatch`` (the first step that differs, with the recorded
and the replayed digest), or ``not replayable`` (its payload was purged, an artefact is missing).
Routing is not run again: it depends on the cases the hub knew then; the receivers are the
record's, and each receiver's message is rebuilt and compared.

``redeliver`` sends the original outbound body (from the payload store, checked against the
record's digest) to one receiver again, through its adapter, with the original message id, so a
receiver that honours the id applies it once. The replay is sealed first (``exchange.replayed``),
then its outcome (``delivery.redelivered``); both name the original leaf and message id.

Nothing here prints a message's content or an error's detail (either may hold personal data):
only ids, steps, problem codes and digests.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol, TextIO

from adapters import Adapter, DeliveryResult, Outbound
from gateway import evidence
from gateway.config import PartyRegistry, load_parties
from gateway.errors import ConfigurationError, GatewayError, PayloadPurgedError
from gateway.evidence import HubSigner
from gateway.mapping import MappingSet
from gateway.outbox import _reason, iso, utc_now
from gateway.payloads import Keyring
from gateway.pipeline import (
    AuthorisedMessage,
    CanonicalMessage,
    InboundMessage,
    _map_out,
    authorise,
    to_canonical,
    validate,
)
from gateway.schemas import SchemaCatalog
from gateway.signatures import SignatureVerifier, SignatureWindow
from gateway.signing import SigningKey
from gateway.store import DeliveryRow, LeafRow, UnitOfWork
from gateway.xml import ParserLimits

__all__ = [
    "Bound",
    "MessageReplay",
    "PinnedConfiguration",
    "Redelivery",
    "ReplayReport",
    "ReplayStore",
    "parse_bound",
    "redeliver",
    "replay",
]

Verdict = Literal["ok", "mismatch", "not-replayable"]


class ReplayStore(Protocol):
    """What replay reads (and, to redeliver, writes) of a store."""

    def leaves(self, start: int = 0, end: int | None = None) -> list[LeafRow]: ...
    def payload(self, sha256: str) -> bytes | None: ...
    def artefact(self, sha256: str) -> bytes | None: ...
    def deliveries(self, message_id: str) -> list[DeliveryRow]: ...


class SealingStore(ReplayStore, Protocol):
    def write(self, work: Any) -> Any: ...


# --- the range -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """One end of a range: a leaf index, or a moment (UTC)."""

    index: int | None = None
    moment: datetime | None = None


def parse_bound(text: str, *, end: bool) -> Bound:
    """``12`` (a leaf index), ``2026-11-27T10:00:00Z`` (a moment) or ``2026-11-27`` (a day: its
    start for ``--from``, its whole for ``--to``)."""
    text = text.strip()
    if text.isdigit():
        return Bound(index=int(text))
    try:
        if len(text) == len("YYYY-MM-DD"):
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return Bound(
                moment=start + timedelta(days=1) - timedelta(microseconds=1) if end else start
            )
        moment = evidence.parse_moment(text)
    except ValueError:
        raise ConfigurationError(
            f"{text!r} is neither a leaf index nor a time (RFC 3339, e.g. 2026-11-27T10:00:00Z)",
            code="config.invalid",
        ) from None
    return Bound(moment=moment)


def _moment(text: str) -> datetime:
    return evidence.parse_moment(text)


def _within(leaf: LeafRow, record: Mapping[str, Any], start: Bound, end: Bound) -> bool:
    if start.index is not None and leaf.leaf_index < start.index:
        return False
    if end.index is not None and leaf.leaf_index > end.index:
        return False
    if start.moment is not None or end.moment is not None:
        moment = _moment(str(record.get("time", "")))
        if start.moment is not None and moment < start.moment:
            return False
        if end.moment is not None and moment > end.moment:
            return False
    return True


# --- the pinned configuration --------------------------------------------------------------------


@dataclass(frozen=True)
class PinnedConfiguration:
    """The hub's schemas, mappings and parties as one configuration.loaded record has them."""

    leaf_index: int
    mappings: MappingSet
    parties: PartyRegistry


@dataclass(frozen=True)
class _Unavailable:
    verdict: Verdict
    step: str
    reason: str
    recorded: str | None = None
    replayed: str | None = None


def _safe_relative(path: str) -> PurePosixPath | None:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        return None
    return relative


class _Pins:
    """Every configuration met, materialised once each (by its set of file digests)."""

    def __init__(self, store: ReplayStore, workdir: Path) -> None:
        self.store = store
        self.workdir = workdir
        self._loaded: dict[str, PinnedConfiguration | _Unavailable] = {}

    def get(self, leaf_index: int, record: Mapping[str, Any]) -> PinnedConfiguration | _Unavailable:
        files: dict[str, str] = dict(record.get("files", {}))
        key = hashlib.sha256(evidence.canonical_json(files)).hexdigest()
        if key not in self._loaded:
            self._loaded[key] = self._materialise(leaf_index, files, key)
        return self._loaded[key]

    def _materialise(
        self, leaf_index: int, files: Mapping[str, str], key: str
    ) -> PinnedConfiguration | _Unavailable:
        home = self.workdir / key[:16]
        missing: list[str] = []
        for path, sha in sorted(files.items()):
            relative = _safe_relative(path)
            if relative is None:
                return _Unavailable(
                    "mismatch",
                    f"configuration {leaf_index}",
                    f"names a file outside the home: {path}",
                )
            try:
                content = self.store.artefact(sha)
            except Exception as exc:  # noqa: BLE001 - a row that is no longer bytes: tampered
                return _Unavailable(
                    "mismatch", f"artefact {path}", f"unreadable ({_code(exc)})", sha, "unreadable"
                )
            if content is None:
                missing.append(path)
                continue
            actual = hashlib.sha256(content).hexdigest()
            if actual != sha:
                return _Unavailable(
                    "mismatch", f"artefact {path}", "stored bytes differ", sha, actual
                )
            target = home / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        if missing:
            return _Unavailable(
                "not-replayable",
                "artefacts",
                f"configuration {leaf_index}: artefact missing: {', '.join(missing)}",
            )
        try:
            catalog = SchemaCatalog.load(home / "schemas")
            mappings = MappingSet.load(home, catalog)
            parties = load_parties(home / "parties.toml")
        except GatewayError as exc:
            return _Unavailable(
                "mismatch",
                f"configuration {leaf_index}",
                f"the pinned files do not load ({exc.code})",
            )
        return PinnedConfiguration(leaf_index, mappings, parties)


# --- one message ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    step: str
    recorded: str
    replayed: str


@dataclass
class MessageReplay:
    """The replay of one exchange.accepted record."""

    leaf_index: int
    leaf_hash: str  # hex, of the original leaf
    message_id: str
    verdict: Verdict = "ok"
    differences: list[Difference] = field(default_factory=list)
    reason: str = ""  # not replayable: why; a step that failed: its problem code
    configuration: int | None = None  # the leaf of the configuration.loaded used
    record: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def differ(self, step: str, recorded: object, replayed: object) -> None:
        if recorded != replayed:
            self.verdict = "mismatch"
            self.differences.append(Difference(step, _shown(recorded), _shown(replayed)))

    def line(self) -> str:
        head = (
            f"leaf {self.leaf_index} {self.record.get('type', '?')} from"
            f" {self.record.get('sender', '?')} message {self.message_id}"
        )
        if self.verdict == "ok":
            return f"{head}: ok"
        if self.verdict == "not-replayable":
            return f"{head}: not replayable: {self.reason}"
        if not self.differences:
            return f"{head}: mismatch: {self.reason}"
        first = self.differences[0]
        more = f" (+{len(self.differences) - 1} more)" if len(self.differences) > 1 else ""
        why = f" ({self.reason})" if self.reason else ""
        return (
            f"{head}: mismatch at {first.step}: recorded {first.recorded},"
            f" replayed {first.replayed}{why}{more}"
        )


def _code(exc: BaseException) -> str:
    """A problem code, or the exception's class: never its text (it may quote the content)."""
    return exc.code if isinstance(exc, GatewayError) else type(exc).__name__


def _shown(value: object) -> str:
    return "none" if value is None else str(value)


def _files(ref: Any) -> dict[str, str]:
    return {str(f["file"]): str(f["sha256"]) for f in ref or ()}


def _compare_files(
    result: MessageReplay, step: str, recorded: Any, replayed: Sequence[tuple[str, str]]
) -> None:
    before, now = _files(recorded), dict(replayed)
    for path in sorted(before.keys() | now.keys()):
        result.differ(f"{step} {path}", before.get(path), now.get(path))


def _replay_one(
    leaf: LeafRow,
    record: Mapping[str, Any],
    pinned: PinnedConfiguration,
    store: ReplayStore,
    limits: ParserLimits,
    window: SignatureWindow,
) -> MessageReplay:
    result = MessageReplay(
        leaf.leaf_index,
        leaf.leaf_hash.hex(),
        str(record.get("messageId")),
        configuration=pinned.leaf_index,
        record=record,
    )
    inbound_ref = record["inbound"]
    try:
        body = store.payload(inbound_ref["sha256"])
    except PayloadPurgedError as exc:
        result.verdict = "not-replayable"
        result.reason = (
            f"payload {inbound_ref['sha256']} was purged (evidence leaf"
            f" {exc.extra.get('leafIndex')}, {exc.extra.get('purgedAt')})"
        )
        return result
    except Exception as exc:  # noqa: BLE001 - it cannot open what it holds: tampered, or its key
        result.verdict = "mismatch"
        result.reason = f"payload: the store cannot read it ({_code(exc)})"
        return result
    if body is None:
        result.verdict = "not-replayable"
        result.reason = f"payload {inbound_ref['sha256']} is no longer in the store (purged)"
        return result
    result.differ("inbound", inbound_ref["sha256"], evidence.digest(body))
    if result.verdict != "ok":
        return result
    signed = record.get("senderSignature")
    inbound = InboundMessage(
        sender=str(record["sender"]),
        body=body,
        content_type=str(inbound_ref["contentType"]),
        transport=inbound_ref["transport"],
        trace_id=str(record["traceId"]),
        received_at=str(record["time"]),
        signature_header=signed.get("value") if isinstance(signed, dict) else None,
    )
    # The sender's signature is checked again, as of the moment it was received.
    verifier = SignatureVerifier.as_of(
        pinned.parties,
        evidence.parse_moment(str(record["time"])),
        required=bool(signed),
        window=window,
    )
    step = "signature, parse and sender schema"
    try:
        validated = validate(inbound, pinned.mappings, limits, verifier)
        replayed = dict(validated.signature.evidence) if validated.signature else None
        result.differ("sender signature", signed, replayed)
        result.differ("sender schema", inbound_ref["schema"]["sha256"], validated.schema_sha256)
        step = "authorise"
        authorised: AuthorisedMessage = authorise(validated, pinned.parties)
        step = "canonical"
        canonical: CanonicalMessage = to_canonical(authorised, pinned.mappings)
    except GatewayError as exc:
        result.verdict, result.reason = "mismatch", f"{step} fails now ({exc.code})"
        return result
    canonical_ref = record["canonical"]
    _compare_files(result, "canonical mapping", canonical_ref["mapping"], canonical.mapping.files)
    result.differ("canonical schema", canonical_ref["schema"]["sha256"], canonical.schema_sha256)
    result.differ("canonical", canonical_ref["sha256"], evidence.digest(canonical.bytes))
    result.differ("message id", record.get("messageId"), canonical.message_id)
    for out_ref in record.get("outbound", ()):
        receiver = str(out_ref["receiver"])
        try:
            out = _map_out(canonical, receiver, pinned.mappings, pinned.parties)
        except (GatewayError, KeyError) as exc:
            result.verdict = "mismatch"
            result.reason = result.reason or f"outbound {receiver} fails now ({_code(exc)})"
            result.differences.append(Difference(f"outbound {receiver}", out_ref["sha256"], "none"))
            continue
        _compare_files(
            result, f"outbound {receiver} mapping", out_ref["mapping"], out.mapping.files
        )
        result.differ(f"outbound {receiver} schema", out_ref["schema"]["sha256"], out.schema_sha256)
        result.differ(f"outbound {receiver} content type", out_ref["contentType"], out.content_type)
        result.differ(f"outbound {receiver}", out_ref["sha256"], evidence.digest(out.body))
    return result


# --- the log -------------------------------------------------------------------------------------


@dataclass
class Redelivery:
    leaf_index: int
    message_id: str
    receiver: str
    outcome: str  # delivered | rejected | failed | skipped
    detail: str
    replay_leaf: int | None = None
    outcome_leaf: int | None = None

    def line(self) -> str:
        where = (
            f" (evidence leaves {self.replay_leaf}, {self.outcome_leaf})"
            if self.replay_leaf is not None
            else ""
        )
        return (
            f"leaf {self.leaf_index} message {self.message_id}: redelivery to {self.receiver}:"
            f" {self.outcome}{': ' + self.detail if self.detail else ''}{where}"
        )


@dataclass
class ReplayReport:
    messages: list[MessageReplay] = field(default_factory=list)
    redeliveries: list[Redelivery] = field(default_factory=list)

    def count(self, verdict: Verdict) -> int:
        return sum(1 for m in self.messages if m.verdict == verdict)

    @property
    def ok(self) -> bool:
        """No mismatch (a message that can no longer be replayed is said, not failed)."""
        return self.count("mismatch") == 0

    @property
    def redelivered(self) -> bool:
        """Every redelivery asked for reached its receiver."""
        return all(r.outcome == "delivered" for r in self.redeliveries)

    def summary(self) -> str:
        return (
            f"{len(self.messages)} exchanges replayed: {self.count('ok')} ok,"
            f" {self.count('mismatch')} mismatch, {self.count('not-replayable')} not replayable"
        )

    def write(self, out: TextIO) -> None:
        for message in self.messages:
            print(message.line(), file=out)
        for redelivery in self.redeliveries:
            print(redelivery.line(), file=out)
        print(self.summary(), file=out)


@contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="guichet-replay-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def replay(
    store: ReplayStore,
    limits: ParserLimits,
    start: Bound | None = None,
    end: Bound | None = None,
    window: SignatureWindow | None = None,
) -> ReplayReport:
    """Replay every exchange.accepted record from ``start`` to ``end`` (both included);
    ``window``: the signature window the hub was configured with (default: the default)."""
    window = window or SignatureWindow()
    start, end = start or Bound(), end or Bound()
    leaves = store.leaves(0, end.index + 1 if end.index is not None else None)
    report = ReplayReport()
    configuration: tuple[int, Mapping[str, Any]] | None = None
    with _workdir() as workdir:
        pins = _Pins(store, workdir)
        for leaf in leaves:
            try:
                record = json.loads(leaf.record)
            except ValueError:
                record = {}
            event = record.get("event")
            if event == "configuration.loaded":
                configuration = (leaf.leaf_index, record)
                continue
            if event != "exchange.accepted" or not _within(leaf, record, start, end):
                continue
            report.messages.append(
                _replay_leaf(leaf, record, configuration, pins, store, limits, window)
            )
    return report


def _replay_leaf(
    leaf: LeafRow,
    record: Mapping[str, Any],
    configuration: tuple[int, Mapping[str, Any]] | None,
    pins: _Pins,
    store: ReplayStore,
    limits: ParserLimits,
    window: SignatureWindow,
) -> MessageReplay:
    result = MessageReplay(
        leaf.leaf_index, leaf.leaf_hash.hex(), str(record.get("messageId")), record=record
    )
    if evidence.leaf_hash(leaf.record) != leaf.leaf_hash:
        result.differ("record", leaf.leaf_hash.hex(), evidence.leaf_hash(leaf.record).hex())
        return result
    if configuration is None:
        result.verdict = "not-replayable"
        result.reason = "no configuration.loaded record precedes it"
        return result
    pinned = pins.get(*configuration)
    if isinstance(pinned, _Unavailable):
        result.verdict, result.reason = pinned.verdict, pinned.reason
        if pinned.recorded is not None:
            result.differences.append(
                Difference(pinned.step, pinned.recorded, _shown(pinned.replayed))
            )
            result.reason = ""
        return result
    try:
        return _replay_one(leaf, record, pinned, store, limits, window)
    except (KeyError, TypeError) as exc:  # a record without the fields of its event
        result.verdict, result.reason = "mismatch", f"the record lacks {exc}"
        return result


# --- redelivery ----------------------------------------------------------------------------------


def redeliver(
    store: SealingStore,
    signer: HubSigner,
    adapter: Adapter,
    replayed: MessageReplay,
    receiver: str,
) -> Redelivery:
    """Send the original outbound body to ``receiver`` again, with the original message id.

    Only a message whose replay matched is sent; the replay is sealed before the send, its
    outcome after, both linked to the original leaf and message id.
    """
    record = replayed.record
    entry = Redelivery(replayed.leaf_index, replayed.message_id, receiver, "skipped", "")
    out_ref = next((o for o in record.get("outbound", ()) if o.get("receiver") == receiver), None)
    if out_ref is None:
        entry.detail = f"{receiver} is not a receiver of this message"
        return entry
    if replayed.verdict != "ok":
        entry.detail = f"its replay is {replayed.verdict}"
        return entry
    try:
        body = store.payload(out_ref["sha256"])
    except Exception as exc:  # noqa: BLE001 - said, and nothing is sent
        body, entry.detail = None, f"the store cannot read the outbound body ({_code(exc)})"
    if body is None or evidence.digest(body) != out_ref["sha256"]:
        entry.detail = entry.detail or "the outbound body is not in the store as recorded"
        return entry
    original = {
        "leafIndex": replayed.leaf_index,
        "leafHash": replayed.leaf_hash,
        "messageId": replayed.message_id,
    }
    now = iso(utc_now())
    replay_leaf = _seal(
        store,
        signer,
        evidence.record(
            "exchange.replayed",
            now,
            messageId=replayed.message_id,
            type=record.get("type"),
            sender=record.get("sender"),
            receiver=receiver,
            traceId=record.get("traceId"),
            replayOf=original,
            configurationLeaf=replayed.configuration,
            verdict=replayed.verdict,
            outbound={"sha256": out_ref["sha256"], "contentType": out_ref["contentType"]},
        ),
        now,
    )
    attempts = [d.attempts for d in store.deliveries(replayed.message_id) if d.receiver == receiver]
    outbound = Outbound(
        message_id=replayed.message_id,
        message_type=str(record.get("type")),
        receiver=receiver,
        body=body,
        content_type=str(out_ref["contentType"]),
        trace_id=str(record.get("traceId")),
        attempt=(attempts[0] if attempts else 0) + 1,
    )
    try:
        result = adapter.deliver(outbound)
    except Exception as exc:  # noqa: BLE001 - an adapter's fault is a failed attempt, sealed
        result = DeliveryResult("failed", None, b"", f"adapter {type(exc).__name__}", 0.0)
    reason = _reason(result)  # our own words, never the receiver's text
    done = iso(utc_now())
    outcome_leaf = _seal(
        store,
        signer,
        evidence.record(
            "delivery.redelivered",
            done,
            messageId=replayed.message_id,
            receiver=receiver,
            traceId=record.get("traceId"),
            replayOf=original,
            replayLeafIndex=replay_leaf,
            outcome=result.outcome,
            status=result.status,
            reason=reason,
            response={"sha256": evidence.digest(result.response)} if result.response else None,
        ),
        done,
        response=result.response,
    )
    entry.outcome, entry.detail = result.outcome, reason if result.outcome != "delivered" else ""
    entry.replay_leaf, entry.outcome_leaf = replay_leaf, outcome_leaf
    return entry


def _seal(
    store: SealingStore,
    signer: HubSigner,
    record: Mapping[str, Any],
    now: str,
    response: bytes = b"",
) -> int:
    leaf = evidence.Leaf.of(record)

    def work(unit: UnitOfWork) -> int:
        if response:
            unit.put_payload(evidence.digest(response), response)
        return evidence.append(unit, signer, leaf, now).leaf_index

    index: int = store.write(work)
    return index


# --- the command ---------------------------------------------------------------------------------


def main(
    data_dir: Path | None,
    start: str | None,
    end: str | None,
    receiver: str | None,
    out: TextIO,
) -> int:
    """``guichet audit replay``: 0 when no message mismatches and every redelivery asked for
    was delivered, 1 otherwise."""
    from gateway.certs import DevPki
    from gateway.config import HubConfig, Settings
    from gateway.hub import receiver_adapter

    settings = Settings(data_dir=data_dir) if data_dir is not None else Settings()
    config = HubConfig.load(settings)
    first = parse_bound(start, end=False) if start else None
    last = parse_bound(end, end=True) if end else None
    limits = ParserLimits.of(config.settings)
    window = SignatureWindow.of(config.settings)
    if receiver is not None and receiver not in config.parties:
        raise ConfigurationError(f"no party {receiver!r} in parties.toml")
    pki = DevPki.at(config.pki_dir)
    # The bodies are kept encrypted: replay reads them with the hub's master key(s).
    # Never create an empty store where one was expected.
    store = config.open_store(
        Keyring.from_files(pki.payload_key, pki.retired_payload_keys), existing=True
    )
    try:
        report = replay(store, limits, first, last, window)
        if receiver is not None:
            party = config.parties[receiver]
            signer = HubSigner.from_files(pki.signing_key, pki.signing_cert)
            adapter: Adapter | None = None
            try:
                for message in report.messages:
                    schema_id = next(
                        (
                            str(o["schema"]["id"])
                            for o in message.record.get("outbound", ())
                            if o.get("receiver") == receiver
                        ),
                        None,
                    )
                    if schema_id is None:
                        continue  # not one of its messages
                    if adapter is None:
                        # Today's address, transport and WSDL of the receiver; the body is the
                        # one sealed then.
                        adapter = receiver_adapter(
                            party,
                            config.home / "schemas" / schema_id,
                            pki.hub,
                            SigningKey.from_files(pki.hub.cert, pki.hub.key),
                        )
                    report.redeliveries.append(redeliver(store, signer, adapter, message, receiver))
            finally:
                if adapter is not None:
                    adapter.close()
    finally:
        store.close()
    report.write(out)
    return 0 if report.ok and report.redelivered else 1
