"""Configuration: ``guichet.toml`` + ``GUICHET_*`` environment overrides, and ``parties.toml``.

Both are read once, at the edge, into frozen objects; nothing deeper reads files or the
environment for configuration.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree
from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway import store as stores
from gateway.certs import CertificateMatch, PartyIdentity
from gateway.errors import ConfigurationError, StoreError
from gateway.ratelimit import RateLimit, rate_limit_from_table

if TYPE_CHECKING:
    from gateway.payloads import Keyring
    from gateway.store.sql import SqlStore

__all__ = [
    "CaseOpener",
    "DeliveryOverrides",
    "HubConfig",
    "Party",
    "PartyRegistry",
    "Route",
    "Settings",
    "load_parties",
]

from gateway.namespaces import CANONICAL_NS
from gateway.xml import SoapVersion

SYMBOLIC_TARGETS = ("@competent-region", "@case-parties", "@correlated-sender")
# Route and case-opener XPaths are run once on it at load: an unknown prefix or function, which
# compiles, fails there rather than on the first message.
_EMPTY_MESSAGE = etree.Element(f"{{{CANONICAL_NS}}}message")


def default_home() -> Path:
    """The folder holding schemas/, mappings/ and parties.toml: the checkout, or the cwd."""
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / "parties.toml").is_file() else Path.cwd()


class Settings(BaseSettings):
    """Hub settings with safe defaults; file ``guichet.toml``, then ``GUICHET_*`` variables."""

    model_config = SettingsConfigDict(
        env_prefix="GUICHET_", toml_file="guichet.toml", frozen=True, extra="forbid"
    )

    home: Path = Field(default_factory=default_home)
    data_dir: Path = Path("var")
    # The store: sqlite:///path or postgresql://user@host:port/db (default: the data dir's
    # SQLite file). Several replicas of the hub may share one PostgreSQL store.
    store: str | None = None
    host: str = "127.0.0.1"
    port: int = 8443
    public_url: str | None = None  # how callers reach the hub (WSDL addresses); default: as asked
    max_body_bytes: int = 2 * 1024 * 1024
    body_timeout_s: float = 30.0  # a request body must arrive within this
    max_depth: int = 48
    # The hardened parser's other limits (gateway.xml.ParserLimits): elements in one document,
    # attributes (and namespace declarations) on one element, UTF-8 bytes of one text node or
    # attribute value, characters of one JSON number.
    max_elements: int = 20_000
    max_attributes: int = 64
    max_text_bytes: int = 256 * 1024
    max_number_digits: int = 100
    delivery_workers: int = 4
    delivery_max_attempts: int = 100
    delivery_max_age_s: float = 48 * 3600.0  # then a delivery is dead-lettered, never dropped
    delivery_backoff_s: float = 0.5
    delivery_backoff_cap_s: float = 900.0
    delivery_jitter: float = 0.2  # ± this fraction of each backoff delay
    delivery_timeout_s: float = 10.0  # an adapter's HTTP timeout (connect, read, write)
    # The circuit of a receiver opens after this many retryable failures in a row; its rows are
    # not claimed for the cooldown (doubled on each failed probe, up to the cap).
    delivery_circuit_failures: int = 5
    delivery_circuit_cooldown_s: float = 30.0
    delivery_circuit_cooldown_cap_s: float = 600.0
    # How long a claimed delivery stays its worker's: a replica killed mid-delivery leaves its
    # claims to be taken over after this (never less than four of a receiver's timeouts).
    delivery_lease_s: float = 120.0
    log_level: str = "info"
    # Checkpoints (signed tree heads) and their RFC 3161 timestamps: a checkpoint every
    # checkpoint_interval_s seconds or every checkpoint_every_records new records, whichever
    # comes first (0 turns that trigger off); each one is timestamped by the first of tsa_urls
    # that answers (none: no timestamps), retried with capped backoff while none does.
    checkpoint_interval_s: float = 60.0
    checkpoint_every_records: int = 1000
    tsa_urls: tuple[str, ...] = ()
    tsa_timeout_s: float = 10.0
    tsa_backoff_s: float = 5.0
    tsa_backoff_cap_s: float = 600.0
    # Message signatures (WS-Security on SOAP, detached JWS on REST): required from every
    # sender unless turned off (then verified when present, and an unsigned message is kept as
    # such in the evidence). A signature is fresh for signature_max_age_s (WS-Security:
    # Expires - Created at most that) with signature_skew_s of clock difference tolerated.
    require_signatures: bool = True
    signature_max_age_s: int = 300
    signature_skew_s: int = 60
    # The CAs client and signing certificates must chain to, and their CRL files (reloaded when
    # they change); default: the PKI's ca.pem and, when present, crl.pem.
    ca_files: tuple[Path, ...] = ()
    crl_files: tuple[Path, ...] = ()
    # Behind a TLS-terminating reverse proxy: the addresses (or networks) of the proxies whose
    # forwarded client certificate is believed, and the header it comes in (URL-encoded PEM).
    # behind_proxy: the hub listens plain HTTP (bind it to an address only the proxy reaches).
    trusted_proxies: tuple[str, ...] = ()
    client_cert_header: str = "X-SSL-Client-Cert"
    behind_proxy: bool = False
    # Each party's rate (messages per second) and burst, unless its [parties.<id>.rate_limit]
    # says otherwise; 0: no limit. Refusals are sealed at most once per party per
    # rate_limit_evidence_s, with their count.
    rate_limit_per_s: float = 0.0
    rate_limit_burst: int = 0
    rate_limit_evidence_s: float = 10.0

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


@dataclass(frozen=True)
class DeliveryOverrides:
    """A party's ``[parties.<id>.delivery]`` table: how the hub delivers to it. Each field left
    out (None) takes the ``delivery_*`` setting of the same name (:class:`Settings`)."""

    max_attempts: int | None = None
    max_age_s: float | None = None
    backoff_s: float | None = None
    backoff_cap_s: float | None = None
    jitter: float | None = None
    timeout_s: float | None = None
    circuit_failures: int | None = None
    circuit_cooldown_s: float | None = None
    circuit_cooldown_cap_s: float | None = None

    def resolve(self, settings: Settings) -> dict[str, Any]:
        """Every field, the party's value or else the setting ``delivery_<field>``."""
        return {
            f.name: getattr(settings, f"delivery_{f.name}")
            if getattr(self, f.name) is None
            else getattr(self, f.name)
            for f in fields(self)
        }


_WHOLE_DELIVERY_KEYS = frozenset({"max_attempts", "circuit_failures"})


def _delivery(table: Any, where: str) -> DeliveryOverrides:
    """Read ``[parties.<id>.delivery]``: known keys only, positive numbers, jitter in [0, 1)."""
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"{where}: delivery must be a table")
    known = {f.name for f in fields(DeliveryOverrides)}
    stray = sorted(set(table) - known)
    if stray:
        raise ConfigurationError(f"{where}: [delivery] has unknown keys {stray}")
    values: dict[str, float | int] = {}
    for key, value in table.items():
        whole = key in _WHOLE_DELIVERY_KEYS
        # bool is an int to Python, never a count or a duration here.
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            kind = "a whole number" if whole else "a number"
            raise ConfigurationError(f"{where}: [delivery] {key} must be {kind}, not {value!r}")
        if key == "jitter":
            if not 0 <= value < 1:
                raise ConfigurationError(f"{where}: [delivery] jitter must be in [0, 1)")
        elif value <= 0:
            raise ConfigurationError(f"{where}: [delivery] {key} must be positive")
        values[key] = value if whole else float(value)
    return DeliveryOverrides(**values)  # type: ignore[arg-type]


def _certificate(table: Any, where: str) -> CertificateMatch | None:
    """Read ``[parties.<id>.certificate]``: ``subject = { serialNumber = "…", O = "…" }``
    (every attribute must match) and/or ``san_uri = "…"``; absent: None (the default rule)."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"{where}: certificate must be a table")
    stray = sorted(set(table) - {"subject", "san_uri"})
    if stray:
        raise ConfigurationError(f"{where}: [certificate] has unknown keys {stray}")
    subject = table.get("subject")
    if subject is not None and (not isinstance(subject, Mapping) or not subject):
        raise ConfigurationError(f"{where}: [certificate] subject must be a non-empty table")
    try:
        return CertificateMatch.of(subject, table.get("san_uri"))
    except ValueError as exc:
        raise ConfigurationError(f"{where}: [certificate] {exc}") from exc


def _no_shared_certificates(parties: Mapping[str, Party], path: Path) -> None:
    """Refuse two parties whose rules one certificate could meet by the same part (a subject
    both accept, or one SAN URI): such a certificate would be ambiguous, so nobody's."""
    items = list(parties.values())
    for i, first in enumerate(items):
        for second in items[i + 1 :]:
            why = first.certificate_match.overlap(second.certificate_match)
            if why:
                raise ConfigurationError(
                    f"{path}: parties {first.id} and {second.id} accept the same certificates"
                    f" ({why}); give them distinct [certificate] rules"
                )


@dataclass(frozen=True)
class Party:
    """One party of the single window."""

    id: str
    names: Mapping[str, str]
    role: str  # portal | region | federal
    protocol: str  # rest | soap11 | …: the adapter's entry-point name
    endpoint: str
    enterprise_number: str
    sends: frozenset[str]
    receives: frozenset[str]
    region: str | None = None
    wsdl: str | None = None  # the back office's WSDL (SOAP parties), under schemas/<party>/
    hub_wsdl: str | None = None  # the hub's endpoint as this party sees it (SOAP parties)
    delivery: DeliveryOverrides = field(default_factory=DeliveryOverrides)
    rate_limit: RateLimit | None = None  # [parties.<id>.rate_limit]; None: the hub's default
    # [parties.<id>.certificate]: which certificates are this party's; None: the default rule.
    certificate: CertificateMatch | None = None

    @property
    def certificate_match(self) -> CertificateMatch:
        """The party's certificate rule: its ``[certificate]`` table, or by default its KBO
        number as the subject's serialNumber or its ``urn:be:guichet:party:<id>`` SAN URI."""
        return self.certificate or CertificateMatch.default_for(self.id, self.enterprise_number)

    @property
    def soap_version(self) -> SoapVersion | None:
        """The SOAP version this party speaks (None: not a SOAP party)."""
        return _SOAP_VERSIONS.get(self.protocol)


_SOAP_VERSIONS: dict[str, SoapVersion] = {"soap11": "1.1", "soap12": "1.2"}


@dataclass(frozen=True)
class Route:
    """Who receives a message type; ``when`` is an XPath on the canonical message."""

    message_type: str
    to: tuple[str, ...]
    when: etree.XPath | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CaseOpener:
    """A message type that opens a case, and where it says the worker will work.

    ``workplace`` holds XPaths on the canonical message, tried in order (DOMAIN.md, step 1: the
    establishment unit, then the main place of work, …); the first that yields a postcode decides
    the competent region.
    """

    message_type: str
    workplace: tuple[str, ...]
    compiled: tuple[etree.XPath, ...] = field(repr=False, compare=False)

    def postcode(self, message: etree._Element) -> tuple[str, str] | None:
        """The first workplace postcode the message gives, with the XPath that found it."""
        for path, xpath in zip(self.workplace, self.compiled, strict=True):
            postcode = str(xpath(message)).strip()
            if postcode:
                return postcode, path
        return None


@dataclass(frozen=True)
class PartyRegistry:
    parties: Mapping[str, Party]
    routes: tuple[Route, ...]
    openers: Mapping[str, CaseOpener] = field(default_factory=dict)
    source: bytes = field(default=b"", repr=False, compare=False)  # parties.toml as read

    def __getitem__(self, party_id: str) -> Party:
        return self.parties[party_id]

    def __contains__(self, party_id: object) -> bool:
        return party_id in self.parties

    def identities(self) -> list[PartyIdentity]:
        """What a certificate of each party says: id, organisation, KBO number."""
        return [
            PartyIdentity(p.id, p.names.get("en", p.id), p.enterprise_number)
            for p in self.parties.values()
        ]

    def region_party(self, region: str) -> Party | None:
        return next((p for p in self.parties.values() if p.region == region), None)

    def with_endpoints(self, endpoints: Mapping[str, str]) -> PartyRegistry:
        """The same parties with some endpoints replaced (sandbox, tests)."""
        unknown = sorted(set(endpoints) - set(self.parties))
        if unknown:
            raise ConfigurationError(f"no party {', '.join(unknown)} in parties.toml")
        parties = {
            pid: replace(p, endpoint=endpoints.get(pid, p.endpoint))
            for pid, p in self.parties.items()
        }
        return replace(self, parties=parties)


def load_parties(path: Path) -> PartyRegistry:
    try:
        source = path.read_bytes()
        data = tomllib.loads(source.decode())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    parties: dict[str, Party] = {}
    unknown = sorted(set(data) - {"parties", "cases", "routes"})
    if unknown:
        raise ConfigurationError(f"{path}: unknown tables {unknown}")
    for party_id, entry in data.get("parties", {}).items():
        stray = sorted(set(entry) - _PARTY_KEYS)
        if stray:
            raise ConfigurationError(f"{path}: party {party_id}: unknown keys {stray}")
        try:
            parties[party_id] = Party(
                id=party_id,
                names=dict(entry["names"]),
                role=entry["role"],
                protocol=entry["protocol"],
                endpoint=entry["endpoint"],
                enterprise_number=entry["enterprise_number"],
                sends=frozenset(entry.get("sends", ())),
                receives=frozenset(entry.get("receives", ())),
                region=entry.get("region"),
                wsdl=entry.get("wsdl"),
                hub_wsdl=entry.get("hub_wsdl"),
                delivery=_delivery(entry.get("delivery", {}), f"{path}: party {party_id}"),
                rate_limit=rate_limit_from_table(entry["rate_limit"], f"{path}: party {party_id}")
                if "rate_limit" in entry
                else None,
                certificate=_certificate(entry.get("certificate"), f"{path}: party {party_id}"),
            )
        except KeyError as exc:
            raise ConfigurationError(f"{path}: party {party_id} lacks {exc}") from exc
    _no_shared_certificates(parties, path)
    routes = tuple(_route(entry, parties, path) for entry in data.get("routes", []))
    cases = data.get("cases", {})
    stray = sorted(set(cases) - {"opened_by"})
    if stray:
        raise ConfigurationError(f"{path}: [cases] has unknown keys {stray}")
    openers = _openers(cases.get("opened_by", {}), path)
    sent = {t for p in parties.values() for t in p.sends}
    to_region = {r.message_type for r in routes if "@competent-region" in r.to}
    for message_type in openers:
        if message_type not in sent or message_type not in to_region:
            raise ConfigurationError(
                f"{path}: [cases.opened_by] {message_type}: a type that opens a case is one a"
                " party sends and a route takes to @competent-region"
            )
    return PartyRegistry(parties, routes, openers, source)


def _openers(table: Any, path: Path) -> dict[str, CaseOpener]:
    """``[cases.opened_by]``: message type → the XPaths of its workplace postcode, in order."""
    if not isinstance(table, Mapping) or not table:
        raise ConfigurationError(
            f"{path}: [cases.opened_by] must map each message type that opens a case to the"
            ' XPaths of its workplace postcode, e.g. "application.submitted" = ["c:…/c:postcode"]'
        )
    openers: dict[str, CaseOpener] = {}
    for message_type, paths in table.items():
        if (
            not isinstance(paths, list)
            or not paths
            or not all(isinstance(p, str) and p.strip() for p in paths)
        ):
            raise ConfigurationError(
                f"{path}: [cases.opened_by] {message_type}: a non-empty list of XPaths"
            )
        compiled = []
        for xpath in paths:
            try:
                found = etree.XPath(
                    f"string({xpath})", namespaces={"c": CANONICAL_NS}, smart_strings=False
                )
                found(_EMPTY_MESSAGE)  # an unknown prefix or function fails here, not at run time
            except etree.XPathError as exc:
                raise ConfigurationError(
                    f"{path}: [cases.opened_by] {message_type}: bad XPath {xpath!r}: {exc}"
                ) from exc
            compiled.append(found)
        openers[message_type] = CaseOpener(message_type, tuple(paths), tuple(compiled))
    return openers


_PARTY_KEYS = frozenset(f.name for f in fields(Party)) - {"id"}


def _route(entry: Mapping[str, Any], parties: Mapping[str, Party], path: Path) -> Route:
    message_type = entry.get("type", "")
    stray = sorted(set(entry) - {"type", "to", "when"})
    if stray:
        raise ConfigurationError(f"{path}: route {message_type}: unknown keys {stray}")
    to = tuple(entry.get("to", ()))
    for target in to:
        if target.startswith("@"):
            if target not in SYMBOLIC_TARGETS:
                raise ConfigurationError(f"{path}: route {message_type}: unknown target {target}")
        elif target not in parties:
            raise ConfigurationError(f"{path}: route {message_type}: unknown party {target}")
        elif message_type not in parties[target].receives:
            raise ConfigurationError(
                f"{path}: route {message_type} goes to {target}, which does not receive it"
            )
    when = None
    if "when" in entry:
        try:
            when = etree.XPath(f"boolean({entry['when']})", namespaces={"c": CANONICAL_NS})
            when(_EMPTY_MESSAGE)  # an unknown prefix or function fails here, not at run time
        except etree.XPathError as exc:
            raise ConfigurationError(f"{path}: route {message_type}: bad 'when': {exc}") from exc
    return Route(message_type, to, when)


@dataclass(frozen=True)
class HubConfig:
    """Everything the hub runs with, resolved to absolute paths."""

    settings: Settings
    parties: PartyRegistry

    @property
    def home(self) -> Path:
        return self.settings.home.resolve()

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def store_url(self) -> str:
        return self.settings.store or stores.default_url(self.data_dir)

    def open_store(self, keyring: Keyring | None = None, *, existing: bool = False) -> SqlStore:
        """The hub's store, migrated; ``existing``: refuse to create a SQLite file where one was
        expected (audit commands, replay)."""
        path = stores.sqlite_path(self.store_url)
        if existing and path is not None and not path.is_file():
            raise StoreError(f"no store at {path}", code="store.not-found")
        return stores.open_store(self.store_url, self.data_dir, keyring)

    @classmethod
    def load(cls, settings: Settings | None = None) -> HubConfig:
        settings = settings or Settings()
        parties = load_parties(settings.home / "parties.toml")
        return cls(settings, parties)
