"""The hub assembled: configuration, schemas, mappings, store, keys, outbox, metrics.

``Hub.open`` is the one place where the pieces meet; the pipeline stages and the service only
receive what they need from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import sys
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters import Adapter, ReceiverConfig, load_adapter
from adapters.soap import Wsdl
from gateway import evidence
from gateway.certs import DevPki, TlsFiles
from gateway.checkpointer import Checkpointing
from gateway.config import HubConfig, Party, PartyRegistry
from gateway.errors import ConfigurationError
from gateway.evidence import Checkpoint, HubSigner
from gateway.identities import Authenticator
from gateway.mapping import MappingSet
from gateway.outbox import Outbox, RetryPolicy, delivery_policies, iso, utc_now
from gateway.payloads import Keyring
from gateway.ratelimit import RateLimit, RateLimiter
from gateway.schemas import SchemaCatalog
from gateway.signatures import SignatureVerifier
from gateway.signing import SigningKey
from gateway.store import Store, UnitOfWork
from gateway.trust import TrustStore
from gateway.xml import ParserLimits

__all__ = [
    "Hub",
    "Metrics",
    "SoapEndpoint",
    "configure_logging",
    "new_trace_id",
    "receiver_adapter",
]


def configure_logging(level: str = "info", stream: Any = None) -> None:
    """structlog JSON lines; the trace id is bound per exchange through contextvars.

    The standard library's records (uvicorn, httpx, httpcore, zeep, ``warnings``) go to the same
    stream as JSON lines too, through one handler on the root logger (replaced on each call): at
    ``debug`` every record of every library, else their warnings and errors only (httpx's line
    per request says less than the hub's own ``delivery.attempted``)."""
    threshold = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_logger_name,
                *shared,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    setattr(handler, _OUR_HANDLER, True)
    lines = _Lines(handler)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=lambda *_: lines,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if getattr(h, _OUR_HANDLER, False)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(threshold if threshold <= logging.DEBUG else max(threshold, logging.WARNING))
    logging.captureWarnings(True)


class _Lines:
    """structlog's output: each rendered line written whole under the stdlib handler's lock, so
    that a line of the hub and a library's line written by two threads never interleave."""

    def __init__(self, handler: logging.StreamHandler[Any]) -> None:
        self._handler = handler

    def msg(self, message: str) -> None:
        with self._handler.lock or contextlib.nullcontext():
            self._handler.stream.write(message + "\n")
            self._handler.stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


_OUR_HANDLER = "_guichet_handler"


def new_trace_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.messages = Counter(
            "guichet_messages",
            "Messages received, by sender, type and outcome",
            ["sender", "type", "outcome"],
            registry=self.registry,
        )
        self.pipeline_seconds = Histogram(
            "guichet_pipeline_seconds",
            "Time from receipt to sealed, accepted messages",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.outbox_depth = Gauge(
            "guichet_outbox_depth",
            "Deliveries not finished (pending, delivering, retrying)",
            registry=self.registry,
        )
        self.deliveries = Counter(
            "guichet_deliveries",
            "Delivery outcomes, by receiver and state",
            ["receiver", "state"],
            registry=self.registry,
        )
        self.circuit_open = Gauge(
            "guichet_circuit_open",
            "1 while a receiver's circuit is open (its deliveries wait), else 0",
            ["receiver"],
            registry=self.registry,
        )


class Hub:
    """Everything a running hub holds."""

    def __init__(
        self,
        config: HubConfig,
        parties: PartyRegistry,
        mappings: MappingSet,
        store: Store,
        signer: HubSigner,
        person_key: bytes,
        tls: TlsFiles,
        adapters: Mapping[str, Adapter],
        trust: TrustStore,
    ) -> None:
        self.config = config
        self.parties = parties
        self.mappings = mappings
        self.store = store
        self.signer = signer
        self.person_key = person_key
        self.tls = tls
        self.adapters = adapters
        settings = config.settings
        # Who is calling (TLS or a trusted proxy's header), who signed, and how often.
        self.trust = trust
        self.identities = Authenticator(
            trust,
            parties,
            proxies=settings.trusted_proxies,
            header=settings.client_cert_header,
            behind_proxy=settings.behind_proxy,
        )
        self.signatures = SignatureVerifier(
            trust,
            parties,
            required=settings.require_signatures,
            max_age_s=settings.signature_max_age_s,
            skew_s=settings.signature_skew_s,
        )
        self.rate_limiter = RateLimiter(
            {p.id: p.rate_limit for p in parties.parties.values() if p.rate_limit is not None},
            RateLimit(settings.rate_limit_per_s, settings.rate_limit_burst)
            if settings.rate_limit_per_s > 0
            else None,
            evidence_interval_s=settings.rate_limit_evidence_s,
        )
        self.metrics = Metrics()
        self.soap_endpoints: dict[str, SoapEndpoint] = {}
        # One thread runs the pipeline stages: libxml2's schema and XSLT objects are used by
        # one thread at a time, and the event loop stays free.
        self.pipeline_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
        self.limits = ParserLimits.of(config.settings)
        self.outbox = Outbox(
            store,
            adapters,
            signer,
            RetryPolicy.configured(config.settings),
            policies=delivery_policies(config.settings, parties),
            workers=config.settings.delivery_workers,
            on_outcome=lambda receiver, state: self.metrics.deliveries.labels(
                receiver, state
            ).inc(),
            on_circuit=lambda receiver, is_open: self.metrics.circuit_open.labels(receiver).set(
                int(is_open)
            ),
        )
        for receiver in parties.parties:  # every circuit shown, closed until it opens
            self.metrics.circuit_open.labels(receiver).set(0)
        # Checkpoints every N s / M records, and their RFC 3161 timestamps: background threads.
        self.checkpointing = Checkpointing(store, signer, config.settings, self.metrics.registry)

    @classmethod
    def open(
        cls,
        config: HubConfig,
        *,
        endpoints: Mapping[str, str] | None = None,
        pki: DevPki | None = None,
    ) -> Hub:
        """Load and check everything; the hub refuses to start on any configuration error."""
        parties = config.parties.with_endpoints(endpoints or {})
        catalog = SchemaCatalog.load(config.home / "schemas")
        mappings = MappingSet.load(config.home, catalog)
        _check_coverage(parties, mappings)
        _check_languages(parties, mappings)
        pki = pki or DevPki.at(config.pki_dir)
        missing = [
            p
            for p in (
                *(pki.ca_cert, pki.hub_cert, pki.hub_key, pki.signing_cert, pki.signing_key),
                pki.payload_key,
            )
            if not p.is_file()
        ]
        if missing:
            raise ConfigurationError(
                f"missing keys or certificates: {', '.join(map(str, missing))}; for development,"
                f" `guichet certs init --dir {pki.directory}` writes them"
            )
        signer = HubSigner.from_files(pki.signing_key, pki.signing_cert)
        tls = pki.hub
        settings = config.settings
        trust = TrustStore(
            settings.ca_files or (pki.ca_cert,),
            settings.crl_files or pki.crl_files,
        )
        # The hub signs what it delivers with its application certificate, as parties do.
        message_signer = SigningKey.from_files(tls.cert, tls.key)
        # The master key that wraps each kept body's data key (and older ones, after a rotation).
        keyring = Keyring.from_files(pki.payload_key, pki.retired_payload_keys)
        store = config.open_store(keyring)
        policies = delivery_policies(config.settings, parties)
        adapters = {
            party.id: receiver_adapter(
                party,
                config.home / "schemas" / mappings.party(party.id).schema.schema_id,
                tls,
                message_signer,
                timeout_s=policies[party.id].timeout_s,
            )
            for party in parties.parties.values()
        }
        hub = cls(
            config,
            parties,
            mappings,
            store,
            signer,
            _person_key(config.data_dir),
            tls,
            adapters,
            trust,
        )
        hub.soap_endpoints = _soap_endpoints(config, parties, mappings)
        hub.record_configuration()
        return hub

    def start(self) -> None:
        self.outbox.start()
        self.checkpointing.start()

    def close(self) -> None:
        self.pipeline_executor.shutdown(wait=True)
        self.outbox.stop()
        self.checkpointing.stop()
        for adapter in self.adapters.values():
            adapter.close()
        self.store.close()

    # -- evidence ---------------------------------------------------------------------------------
    def record_configuration(self) -> None:
        """Seal the set of parties, schemas and mappings in force, and keep every file's bytes."""
        home = self.config.home
        # The bytes that were loaded, checked and compiled — never read again from disk.
        contents: dict[str, bytes] = dict(self.mappings.sources)
        for schema in self.mappings.catalog:
            for schema_file in schema.files.values():
                contents[schema_file.path.resolve().relative_to(home).as_posix()] = (
                    schema_file.content
                )
        contents["parties.toml"] = self.parties.source
        files = {path: hashlib.sha256(data).hexdigest() for path, data in contents.items()}
        now = iso(utc_now())
        leaf = evidence.Leaf.of(
            evidence.record(
                "configuration.loaded",
                now,
                parties=sorted(self.parties.parties),
                files=dict(sorted(files.items())),
            )
        )

        def work(unit: UnitOfWork) -> None:
            for relative, content in contents.items():
                unit.put_artefact(files[relative], relative, content)
            evidence.append(unit, self.signer, leaf, now)

        self.store.write(work)

    def checkpoint(self) -> Checkpoint:
        """Sign the current tree head (size, root, time) and keep it."""
        hashes = self.store.leaf_hashes(0, self.store.leaf_count())
        root = evidence.merkle_root(hashes).hex()
        checkpoint = evidence.sign_checkpoint(self.signer, len(hashes), root, iso(utc_now()))
        self.store.write(
            lambda unit: unit.add_checkpoint(
                checkpoint.tree_size,
                checkpoint.root_hash,
                checkpoint.time,
                checkpoint.key_id,
                checkpoint.signature,
            )
        )
        return checkpoint


def receiver_adapter(
    party: Party,
    schema_dir: Path,
    tls: TlsFiles,
    signer: SigningKey,
    *,
    timeout_s: float = 10.0,
) -> Adapter:
    """The adapter that delivers to ``party`` (its protocol's), over mutual TLS with the hub's
    certificate, signing each delivery with ``signer``; ``schema_dir`` holds its XSDs and WSDL."""
    return load_adapter(party.protocol)(
        ReceiverConfig(
            party=party.id,
            protocol=party.protocol,
            endpoint=party.endpoint,
            schema_dir=schema_dir,
            wsdl=party.wsdl,
            client_cert=tls.cert,
            client_key=tls.key,
            ca=tls.ca,
            timeout_s=timeout_s,
            signer=signer,
        )
    )


def _check_coverage(parties: PartyRegistry, mappings: MappingSet) -> None:
    """Every type a party may send has a mapping to canonical, every type it receives one from
    canonical: a gap is a configuration error at start, never a 422 blamed on a sender later."""
    gaps = [
        f"{party.id} {verb} {message_type} but has no mappings/{party.id}/{direction}/"
        f"{message_type}.toml"
        for party in parties.parties.values()
        for verb, direction, types in (
            ("sends", "to-canonical", party.sends),
            ("receives", "from-canonical", party.receives),
        )
        for message_type in sorted(types)
        if (party.id, direction, message_type) not in mappings.mappings
    ]
    if gaps:
        raise ConfigurationError("parties.toml and mappings/ disagree:\n  " + "\n  ".join(gaps))


def _check_languages(parties: PartyRegistry, mappings: MappingSet) -> None:
    """A party's names are in languages of the single window (the canonical list)."""
    known = set(mappings.canonical_lists.lists["languages"].values)
    wrong = [
        f"{party.id} has a name in {language!r}"
        for party in parties.parties.values()
        for language in sorted(set(party.names) - known)
    ]
    if wrong:
        raise ConfigurationError(
            f"parties.toml: names are in {', '.join(sorted(known))} only: " + "; ".join(wrong)
        )


@dataclass(frozen=True)
class SoapEndpoint:
    """The hub's SOAP endpoint as one party sees it, prepared once at start."""

    actions: dict[str, str]  # payload element (Clark) → the SOAPAction the WSDL gives it
    wsdl: str  # the WSDL text; its address and schema locations are filled in per request
    schemas: dict[str, bytes]  # every schemaLocation it names (transitively) → the file's bytes


_SCHEMA_LOCATION = re.compile(r'schemaLocation="([^"]+)"')


def _soap_endpoints(
    config: HubConfig, parties: PartyRegistry, mappings: MappingSet
) -> dict[str, SoapEndpoint]:
    """For each SOAP party: the SOAPActions of its hub WSDL, the WSDL, and what it imports."""
    endpoints: dict[str, SoapEndpoint] = {}
    schemas_dir = (config.home / "schemas").resolve()
    for party in parties.parties.values():
        if party.hub_wsdl is None:
            continue
        folder = schemas_dir / mappings.party(party.id).schema.schema_id
        wsdl_path = folder / party.hub_wsdl
        wsdl = Wsdl.load(wsdl_path, root=schemas_dir)
        text = wsdl_path.read_text()
        imported: dict[str, bytes] = {}
        pending = [(name, folder) for name in _SCHEMA_LOCATION.findall(text)]
        while pending:
            name, base = pending.pop()
            path = (base / name).resolve()
            if name in imported:
                continue
            if not path.is_relative_to(schemas_dir) or not path.is_file():
                raise ConfigurationError(f"{wsdl_path}: imports {name}, not under schemas/")
            imported[name] = path.read_bytes()
            pending.extend(
                (nested, path.parent)
                for nested in _SCHEMA_LOCATION.findall(imported[name].decode())
            )
        endpoints[party.id] = SoapEndpoint(
            actions={tag: op.soap_action for tag, op in wsdl.operations.items()},
            wsdl=text,
            schemas=imported,
        )
    return endpoints


def _person_key(data_dir: Path) -> bytes:
    """The key of the keyed hash that makes national numbers searchable but not readable.

    Made once per data dir, written whole or not at all, readable by the owner only."""
    path = data_dir / "person-ref.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(32))
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
    key = path.read_bytes()
    if len(key) != 32:
        raise ConfigurationError(f"{path} must hold 32 bytes, it holds {len(key)}")
    return key
