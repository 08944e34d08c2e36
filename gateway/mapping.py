"""The mapping engine: declarative party ⇄ canonical mappings (format: docs/mappings.md).

At load, every mapping file is parsed, checked against both schemas (paths exist, required targets
are produced, code lists are complete and reversible) and compiled into an XSLT 1.0 stylesheet that
libxslt runs on the hot path. Golden pairs are run by :func:`check_golden`.

``python -m gateway.mapping check [HOME]`` checks every mapping and golden pair under HOME.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

from gateway.codelists import CanonicalLists, Countries, Municipalities
from gateway.errors import (
    ConfigurationError,
    GatewayError,
    MappingError,
    UnknownMessageTypeError,
)
from gateway.jsonxml import JsonBinding
from gateway.schemas import Schema, SchemaCatalog
from gateway.xml import DEFAULT_LIMITS, ParserLimits, parse_json, parse_xml

__all__ = [
    "CANONICAL_NS",
    "CompiledMapping",
    "Direction",
    "MappingSet",
    "PartyFormat",
    "check_golden",
]

from gateway.namespaces import CANONICAL_NS

CANONICAL_SCHEMA = "canonical"
XSL_NS = "http://www.w3.org/1999/XSL/Transform"
PARAMS = ("sender", "receiver", "traceId", "receivedAt")
Direction = Literal["to-canonical", "from-canonical"]
_UNMAPPED = "guichet:unmapped-code"


# ---------------------------------------------------------------------------------------------
# Party formats


@dataclass(frozen=True)
class PartyFormat:
    """How the hub reads and writes one party's bodies."""

    party: str
    schema: Schema
    format: Literal["xml", "json"]
    namespaces: Mapping[str, str]
    type_xpath: etree.XPath = field(repr=False, compare=False)
    type_values: Mapping[str, str]
    binding: JsonBinding | None = field(default=None, repr=False, compare=False)

    @property
    def media_type(self) -> str:
        """The Content-Type of this party's REST bodies (SOAP parties: the envelope's)."""
        return "application/json" if self.format == "json" else "application/xml"

    def message_type(self, element: etree._Element) -> str:
        """The canonical type of a message of this party, from its XML form."""
        raw = self.type_xpath(element)
        value = str(raw).strip() if not isinstance(raw, list) else ""
        try:
            return self.type_values[value]
        except KeyError:
            raise UnknownMessageTypeError(
                f"{value or 'no value'!r} is not a message type {self.party} sends",
                path=self.type_xpath.path,
                schema_id=self.schema.schema_id,
            ) from None

    def read(self, body: bytes, limits: ParserLimits = DEFAULT_LIMITS) -> etree._Element:
        """Parse a body of this party into its XML form (JSON goes through the binding)."""
        if self.binding is not None:
            return self.binding.to_xml(parse_json(body, limits))
        return parse_xml(body, limits)

    def write(self, element: etree._Element) -> bytes:
        """Serialise an XML form in this party's wire format."""
        if self.binding is not None:
            return json.dumps(
                self.binding.to_json(element), ensure_ascii=False, separators=(",", ":")
            ).encode()
        return etree.tostring(element, encoding="UTF-8", xml_declaration=False)


# ---------------------------------------------------------------------------------------------
# Rules and their compilation


@dataclass(frozen=True)
class _Rule:
    origin: str
    to: tuple[str, ...]
    sources: tuple[str, ...] = ()
    value: str | None = None
    codelist: str | None = None
    each: str | None = None
    rules: tuple[_Rule, ...] = ()


def _parse_rules(entries: Any, origin: str) -> tuple[_Rule, ...]:
    if not isinstance(entries, list):
        raise ConfigurationError(f"{origin}: 'map' must be an array of tables")
    rules = []
    for index, entry in enumerate(entries):
        where = f"{origin}: map[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("to"), str):
            raise ConfigurationError(f"{where}: every rule needs a 'to' path")
        unknown = set(entry) - {"to", "from", "value", "codelist", "each", "map"}
        if unknown:
            raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
        source = entry.get("from")
        sources = (source,) if isinstance(source, str) else tuple(source or ())
        has_value = "value" in entry
        each = entry.get("each")
        if each is not None:
            if sources or has_value or "map" not in entry:
                raise ConfigurationError(f"{where}: an 'each' rule has nested 'map' rules only")
        elif bool(sources) == has_value:
            raise ConfigurationError(f"{where}: a rule has either 'from' or 'value'")
        to = tuple(step for step in entry["to"].split("/") if step)
        nested = _parse_rules(entry["map"], where) if each is not None else ()
        rules.append(
            _Rule(
                origin=f"{where} (to {entry['to']})",
                to=to,
                sources=sources,
                value=str(entry["value"]) if has_value else None,
                codelist=entry.get("codelist"),
                each=each,
                rules=nested,
            )
        )
    return tuple(rules)


@dataclass
class _Target:
    """A node of the target tree a mapping writes."""

    step: str
    rule: _Rule | None = None  # a leaf (element text or attribute value)
    each: _Rule | None = None  # a repeated element, one per source element
    children: dict[str, _Target] = field(default_factory=dict)
    decl: Any = None  # xmlschema declaration, set by the checker


@dataclass(frozen=True)
class CompiledMapping:
    """One mapping file, checked and compiled."""

    party: str
    direction: Direction
    message_type: str
    path: Path
    files: tuple[tuple[str, str], ...]  # (relative path, SHA-256) of the file and its includes
    source_schema: Schema
    target_schema: Schema
    source_root: str  # Clark name
    target_root: str
    xslt: etree.XSLT = field(repr=False, compare=False)
    stylesheet: bytes = field(repr=False, compare=False)
    # canonical path → party path, for the plain one-to-one rules (no group, no parameter)
    fields: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # canonical path → the code list a plain rule applies, oriented source value → target value
    codes: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False, compare=False)

    def apply(self, source: etree._Element, params: Mapping[str, str]) -> etree._Element:
        """Transform a source element; raise ``MappingError`` on a code with no mapping."""
        if source.tag != self.source_root:
            raise MappingError(
                f"{self.path.name} reads {self.source_root}, not {source.tag}", path="/"
            )
        quoted = {k: etree.XSLT.strparam(v) for k, v in params.items()}
        try:
            result = self.xslt(source, **quoted)  # type: ignore[arg-type]
        except etree.XSLTApplyError as exc:
            raise _mapping_error(self, exc) from exc
        root = result.getroot()
        if root is None:
            raise MappingError(f"{self.path.name} produced nothing")
        return root


def _mapping_error(mapping: CompiledMapping, exc: etree.XSLTApplyError) -> MappingError:
    for entry in mapping.xslt.error_log:  # type: ignore[attr-defined]
        if entry.message.startswith(_UNMAPPED):
            _, codelist, path, value = entry.message.split("|", 3)
            return MappingError(
                f"value {value!r} has no entry in code list {codelist!r} of {mapping.party}",
                code="mapping.unmapped-code",
                path=path,
            )
    return MappingError(f"{mapping.path.name}: {exc}")


class _Compiler:
    """Checks one mapping file against its two schemas and writes its XSLT."""

    def __init__(
        self,
        path: Path,
        source: Schema,
        target: Schema,
        namespaces: Mapping[str, str],
        codelists: Mapping[str, Mapping[str, str]],
        direction: Direction,
    ) -> None:
        self.path = path
        self.source = source
        self.target = target
        self.namespaces = namespaces
        self.codelists = codelists
        self.direction = direction
        self.errors: list[str] = []
        self._var = 0

    # paths -----------------------------------------------------------------------------------
    def clark(self, step: str) -> str:
        if ":" in step:
            prefix, local = step.split(":", 1)
            if prefix not in self.namespaces:
                raise ConfigurationError(f"{self.path}: unknown prefix {prefix!r} in {step!r}")
            return f"{{{self.namespaces[prefix]}}}{local}"
        return step  # unqualified local element (JSON parties' schemas)

    def resolve(self, decl: Any, path: str, origin: str) -> Any:
        """Walk a location path through the source schema; return the last declaration."""
        current = decl
        for step in (s for s in path.split("/") if s and s != "."):
            current = self.child(current, step, origin, path)
            if current is None:
                return None
        return current

    def child(self, decl: Any, step: str, origin: str, path: str) -> Any:
        xsd_type = decl.type
        if step.startswith("@"):
            found = xsd_type.attributes.get(step[1:]) if not xsd_type.is_simple() else None
            if found is None:
                self.errors.append(f"{origin}: no attribute {step} in {decl.name} (path {path})")
            return found
        name = self.clark(step)
        if not xsd_type.is_simple() and not xsd_type.has_simple_content():
            for element in xsd_type.content.iter_elements():
                if element.name == name:
                    return element
        self.errors.append(f"{origin}: no element {step} in {decl.name} (path {path})")
        return None

    # the target tree --------------------------------------------------------------------------
    def tree(self, rules: tuple[_Rule, ...], root: _Target, *, nested: bool = False) -> None:
        """Merge the rules' target paths into one tree (``root`` is an each group if nested)."""
        for rule in rules:
            node = root
            steps = [step for step in rule.to if step != "."]  # "." is the element itself
            for step in steps:
                node = node.children.setdefault(step, _Target(step))
            taken = node.each if rule.each is not None else node.rule
            if taken is not None or (node is root and not nested):
                self.errors.append(f"{rule.origin}: {'/'.join(rule.to)} is written twice")
                continue
            if rule.each is not None:
                node.each = rule
                self.tree(rule.rules, node, nested=True)
            else:
                node.rule = rule

    def check_target(self, node: _Target, decl: Any, origin: str) -> None:
        node.decl = decl
        xsd_type = decl.type
        produced: set[str] = set()
        for step, child in node.children.items():
            child_decl = self.child(decl, step, child_origin(child, origin), step)
            if child_decl is None:
                continue
            produced.add(child_decl.name if not step.startswith("@") else step)
            if not step.startswith("@") and child.children:
                self.check_target(child, child_decl, origin)
            elif not step.startswith("@"):
                child.decl = child_decl
            else:
                child.decl = child_decl
        if xsd_type.is_simple() or xsd_type.has_simple_content():
            return
        for attribute in xsd_type.attributes.values():
            if attribute.use == "required" and f"@{attribute.local_name}" not in produced:
                self.errors.append(
                    f"{origin}: required attribute @{attribute.local_name} "
                    f"of {decl.name} is not produced"
                )
        for missing in _missing(xsd_type.content, produced):
            self.errors.append(f"{origin}: {decl.name} requires {missing}, no rule produces it")

    def check_sources(self, node: _Target, decl: Any) -> None:
        """Check every rule's source paths (relative to ``decl``) and code lists."""
        for child in node.children.values():
            if child.each is not None:
                each_decl = self.resolve(decl, child.each.each or "", child.each.origin)
                if each_decl is not None:
                    self.check_each(child, each_decl)
                continue
            if child.rule is not None:
                self.check_leaf(child, decl)
            self.check_sources(child, decl)

    def check_each(self, node: _Target, decl: Any) -> None:
        """A repeated group: its own text rule and its children, relative to the repeated source."""
        if node.rule is not None:
            self.check_leaf(node, decl)
        self.check_sources(node, decl)

    def check_leaf(self, node: _Target, context: Any) -> None:
        rule = node.rule
        assert rule is not None
        target_enum = _enumeration(node.decl)
        if rule.value is not None:
            if target_enum is not None and rule.value not in target_enum:
                self.errors.append(f"{rule.origin}: {rule.value!r} is not allowed by the target")
            return
        for source in rule.sources:
            if source.startswith("$"):
                if source[1:] not in PARAMS:
                    self.errors.append(f"{rule.origin}: unknown parameter {source}")
                continue
            source_decl = self.resolve(context, source, rule.origin)
            if source_decl is None:
                continue
            source_enum = _enumeration(source_decl)
            if rule.codelist is None:
                if (
                    source_enum is not None
                    and target_enum is not None
                    and not set(source_enum) <= set(target_enum)
                ):
                    self.errors.append(
                        f"{rule.origin}: source values"
                        f" {sorted(set(source_enum) - set(target_enum))}"
                        " are not target values: a codelist is needed"
                    )
                continue
            table = self.codelist(rule)
            if table is None:
                continue
            if source_enum is not None:
                missing = sorted(set(source_enum) - set(table))
                if missing:
                    self.errors.append(
                        f"{rule.origin}: code list {rule.codelist!r} has no entry for {missing}"
                    )
            if target_enum is not None:
                extra = sorted(set(table.values()) - set(target_enum))
                if extra:
                    self.errors.append(
                        f"{rule.origin}: code list {rule.codelist!r} produces {extra},"
                        " which the target does not allow"
                    )

    def codelist(self, rule: _Rule) -> dict[str, str] | None:
        table = self.codelists.get(rule.codelist or "")
        if table is None:
            self.errors.append(f"{rule.origin}: no code list {rule.codelist!r}")
            return None
        if self.direction == "to-canonical":
            return dict(table)
        reverse: dict[str, str] = {}
        for party_value, canonical_value in table.items():
            if canonical_value in reverse:
                self.errors.append(
                    f"{rule.origin}: code list {rule.codelist!r} maps {canonical_value!r} back to"
                    f" both {reverse[canonical_value]!r} and {party_value!r}"
                )
            reverse[canonical_value] = party_value
        return reverse

    # XSLT --------------------------------------------------------------------------------------
    def xslt(self, root: _Target, source_root: str) -> bytes:
        prefixes = " ".join(
            f"xmlns:{p}={quoteattr(uri)}" for p, uri in sorted(self.namespaces.items())
        )
        params = "".join(f'<xsl:param name="{p}"/>' for p in PARAMS)
        body = self.emit(root, top=True)
        excluded = " ".join(sorted(self.namespaces))
        return (
            f'<xsl:stylesheet version="1.0" xmlns:xsl="{XSL_NS}" {prefixes} '
            f'exclude-result-prefixes="{excluded}">'
            '<xsl:output method="xml" encoding="UTF-8"/>'
            f"{params}"
            f'<xsl:template match="/"><xsl:for-each select="/{source_root}">{body}'
            "</xsl:for-each></xsl:template></xsl:stylesheet>"
        ).encode()

    def emit(self, node: _Target, top: bool = False) -> str:
        if top:  # the root element is always written
            inner = "".join(self.emit(child) for child in self.ordered(node))
            return f"<{node.step}>{inner}</{node.step}>"
        if node.step.startswith("@"):
            assert node.rule is not None
            var = self.variable(node.rule)
            attribute = node.step[1:]
            value = self.value(node.rule, var)
            return self.guarded(
                node.rule, f'<xsl:attribute name="{attribute}">{value}</xsl:attribute>', var
            )
        tag = node.step
        # Attributes come first in ordered(), then child elements, then the element's own text.
        content = "".join(self.emit(child) for child in self.ordered(node))
        if node.each is not None:  # the text of a repeated element is written as it is
            if node.rule is not None:
                content += self.value(node.rule, None)
            element = f"<{tag}>{content}</{tag}>"
            return f'<xsl:for-each select="{node.each.each}">{element}</xsl:for-each>'
        if node.rule is not None:
            var = self.variable(node.rule)
            content += self.value(node.rule, var)
            return self.guarded(node.rule, f"<{tag}>{content}</{tag}>", var)
        element = f"<{tag}>{content}</{tag}>"
        condition = self.any_source(node)
        if condition is None:
            return element
        return f"<xsl:if test={quoteattr(condition)}>{element}</xsl:if>"

    def ordered(self, node: _Target) -> list[_Target]:
        """Children in the order the target schema declares them (attributes first)."""
        decl = node.decl
        order: dict[str, int] = {}
        if decl is not None and not decl.type.is_simple() and not decl.type.has_simple_content():
            order = {e.name: i for i, e in enumerate(decl.type.content.iter_elements())}

        def key(child: _Target) -> tuple[int, int]:
            if child.step.startswith("@"):
                return (0, 0)
            name = child.decl.name if child.decl is not None else ""
            return (1, order.get(name, len(order)))

        return sorted(node.children.values(), key=key)

    def any_source(self, node: _Target) -> str | None:
        """An XPath true when some leaf under ``node`` has a source; None when always written."""
        paths: list[str] = []
        for leaf in _leaves(node):
            if leaf.value is not None or any(s.startswith("$") for s in leaf.sources):
                return None
            paths.extend(leaf.sources)
        # "or" stops at the first source found; a union ("|") would build and sort a node-set.
        return " or ".join(dict.fromkeys(paths)) if paths else None

    def guarded(self, rule: _Rule, content: str, var: str | None) -> str:
        """Write ``content`` only when the rule's value (held in ``var``) is not empty."""
        if var is None:
            return content
        return (
            f"<xsl:variable name={quoteattr(var)} select={quoteattr(self.expression(rule))}/>"
            f"<xsl:if test=\"${var} != ''\">{content}</xsl:if>"
        )

    def variable(self, rule: _Rule) -> str | None:
        """A fresh variable for a rule whose value comes from the source (evaluated once, tested,
        then written); None for constants and parameters, which are always written."""
        if rule.value is not None or all(s.startswith("$") for s in rule.sources):
            return None
        self._var += 1
        return f"v{self._var}"

    def expression(self, rule: _Rule) -> str:
        parts = list(rule.sources)
        if len(parts) == 1:
            return f"string({parts[0]})"
        return "normalize-space(concat(" + ", ' ', ".join(parts) + "))"

    def value(self, rule: _Rule, var: str | None) -> str:
        """The instructions writing a rule's value (from ``var`` when it already holds it)."""
        if rule.value is not None:
            return f"<xsl:text>{escape(rule.value)}</xsl:text>"
        expression = f"${var}" if var else self.expression(rule)
        if rule.codelist is None:
            return f"<xsl:value-of select={quoteattr(expression)}/>"
        table = self.codelist(rule) or {}
        declare = ""
        if var is None:
            self._var += 1
            var = f"v{self._var}"
            declare = f"<xsl:variable name={quoteattr(var)} select={quoteattr(expression)}/>"
        whens = "".join(
            f"<xsl:when test={quoteattr(f'${var} = {_xpath_literal(k)}')}>"
            f"<xsl:text>{escape(v)}</xsl:text></xsl:when>"
            for k, v in table.items()
        )
        where = escape("/".join(rule.to))
        return (
            f"{declare}"
            f'<xsl:choose>{whens}<xsl:otherwise><xsl:message terminate="yes">'
            f'{_UNMAPPED}|{escape(rule.codelist or "")}|{where}|<xsl:value-of select="${var}"/>'
            "</xsl:message></xsl:otherwise></xsl:choose>"
        )


def _leaves(node: _Target) -> Iterator[_Rule]:
    if node.each is not None:
        # A repeated group exists when its source elements exist (its own rules are relative).
        yield _Rule(origin=node.each.origin, to=node.each.to, sources=(node.each.each or "",))
        return
    if node.rule is not None:
        yield node.rule
    for child in node.children.values():
        yield from _leaves(child)


def child_origin(child: _Target, origin: str) -> str:
    rule = child.rule or child.each
    return rule.origin if rule is not None else origin


def _xpath_literal(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    return f'"{value}"'


def _enumeration(decl: Any) -> list[str] | None:
    if decl is None:
        return None
    xsd_type = decl.type
    if not xsd_type.is_simple():
        if not xsd_type.has_simple_content():
            return None
        xsd_type = xsd_type.content
    values = getattr(xsd_type, "enumeration", None)
    return [str(v) for v in values] if values else None


def _missing(group: Any, produced: set[str]) -> list[str]:
    """Required particles of a content model that nothing produces."""
    missing: list[str] = []
    if group.model == "choice":
        if group.min_occurs and not _any_produced(group, produced):
            names = ", ".join(_names(group))
            missing.append(f"one of ({names})")
        return missing
    for particle in group:
        if hasattr(particle, "model"):
            if particle.min_occurs:
                missing.extend(_missing(particle, produced))
        elif particle.min_occurs and particle.name not in produced:
            missing.append(particle.name)
    return missing


def _any_produced(group: Any, produced: set[str]) -> bool:
    return any(name in produced for name in _names(group))


def _names(group: Any) -> list[str]:
    return [element.name for element in group.iter_elements()]


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class MappingSet:
    """Every party format and every compiled mapping under a home folder."""

    catalog: SchemaCatalog
    parties: Mapping[str, PartyFormat]
    mappings: Mapping[tuple[str, Direction, str], CompiledMapping]
    sources: Mapping[str, bytes]  # every file read (relative path → the exact bytes used)
    municipalities: Municipalities  # mappings/codelists/municipalities.csv
    canonical_lists: CanonicalLists  # mappings/codelists/canonical.toml
    countries: Countries | None = None  # mappings/codelists/countries.csv

    @classmethod
    def load(cls, home: Path, catalog: SchemaCatalog | None = None) -> MappingSet:
        catalog = catalog or SchemaCatalog.load(home / "schemas")
        parties: dict[str, PartyFormat] = {}
        mappings: dict[tuple[str, Direction, str], CompiledMapping] = {}
        sources = _Sources(home)
        errors: list[str] = []
        mappings_dir = home / "mappings"
        shared_dir = mappings_dir / "codelists"
        lists_path = shared_dir / "canonical.toml"
        canonical_lists = CanonicalLists.parse(sources.read(lists_path).decode(), str(lists_path))
        canonical_lists.check(_enumerations(catalog), str(lists_path))
        countries_path = shared_dir / "countries.csv"
        countries = (
            Countries.parse(sources.read(countries_path).decode(), str(countries_path))
            if countries_path.is_file()
            else None
        )
        for party_dir in sorted(p for p in mappings_dir.iterdir() if (p / "party.toml").is_file()):
            party, codelists, namespaces = _load_party(party_dir, catalog, sources, countries)
            parties[party.party] = party
            for direction in ("to-canonical", "from-canonical"):
                folder = party_dir / direction
                if not folder.is_dir():
                    continue
                for path in sorted(folder.glob("*.toml")):
                    if path.name.startswith("_"):
                        continue
                    try:
                        compiled = _compile_file(
                            path, party, catalog, namespaces, codelists, direction, sources
                        )
                    except ConfigurationError as exc:
                        errors.append(str(exc))
                        continue
                    mappings[(party.party, compiled.direction, compiled.message_type)] = compiled
        if errors:
            raise ConfigurationError("mappings do not check:\n  " + "\n  ".join(errors))
        table = shared_dir / "municipalities.csv"
        municipalities = Municipalities.parse(sources.read(table).decode(), str(table))
        return cls(
            catalog,
            parties,
            mappings,
            sources.contents,
            municipalities,
            canonical_lists,
            countries,
        )

    def get(self, party: str, direction: Direction, message_type: str) -> CompiledMapping:
        try:
            return self.mappings[(party, direction, message_type)]
        except KeyError:
            verb = "send" if direction == "to-canonical" else "receive"
            raise MappingError(
                f"no mapping for {party} to {verb} {message_type}", code="mapping.no-mapping"
            ) from None

    def party_field(self, party: str, canonical_path: str) -> str | None:
        """Where a canonical field sits in a party's format, as its mappings say (the path in
        the party's XML form, with the prefixes of its party.toml)."""
        for (owner, _, _), mapping in sorted(self.mappings.items()):
            if owner == party and canonical_path in mapping.fields:
                return mapping.fields[canonical_path]
        return None

    def party(self, party: str) -> PartyFormat:
        try:
            return self.parties[party]
        except KeyError:
            raise ConfigurationError(f"no mappings/{party}/party.toml") from None


class _Sources:
    """Every file the mappings are made of, read once: the bytes that were checked and compiled
    are the bytes the evidence records and keeps."""

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.contents: dict[str, bytes] = {}

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.home).as_posix()

    def read(self, path: Path) -> bytes:
        relative = self.relative(path)
        if relative not in self.contents:
            try:
                self.contents[relative] = path.read_bytes()
            except OSError as exc:
                raise ConfigurationError(f"{path}: {exc}") from exc
        return self.contents[relative]

    def toml(self, path: Path) -> dict[str, Any]:
        try:
            return tomllib.loads(self.read(path).decode())
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"{path}: {exc}") from exc


def _enumerations(catalog: SchemaCatalog) -> dict[str, list[str] | None]:
    """Every named simple type of canonical.xsd → its enumeration (None when it has none)."""
    components = catalog[CANONICAL_SCHEMA].files[CANONICAL_NS].components
    return {
        etree.QName(name).localname: getattr(xsd_type, "enumeration", None)
        for name, xsd_type in components.types.items()
        if xsd_type.is_simple()
    }


def _codelist(
    name: str, table: Mapping[str, Any], countries: Countries | None, origin: str
) -> dict[str, str]:
    """One table of a party's codelists.toml: its own pairs, or a shared list taken whole
    (``shared = "countries"``, ``column = "nis"``: the NIS codes → ISO alpha-3)."""
    if "shared" not in table:
        return {str(k): str(v) for k, v in table.items()}
    if table["shared"] != "countries" or set(table) != {"shared", "column"}:
        raise ConfigurationError(
            f'{origin}: [{name}] a shared table is shared = "countries" with a column'
        )
    if countries is None:
        raise ConfigurationError(f"{origin}: [{name}] needs mappings/codelists/countries.csv")
    return countries.table(str(table["column"]))


def _load_party(
    party_dir: Path, catalog: SchemaCatalog, sources: _Sources, countries: Countries | None
) -> tuple[PartyFormat, dict[str, dict[str, str]], dict[str, str]]:
    path = party_dir / "party.toml"
    data = sources.toml(path)
    schema = catalog[data["schema"]]
    namespaces = {"c": CANONICAL_NS, **data.get("namespaces", {})}
    message_type = data.get("message_type", {})
    try:
        type_xpath = etree.XPath(message_type["xpath"], namespaces=namespaces)
    except (KeyError, etree.XPathSyntaxError) as exc:
        raise ConfigurationError(f"{path}: [message_type] needs a valid xpath: {exc}") from exc
    binding = None
    if data.get("format") == "json":
        root = data.get("root", "")
        prefix, _, local = root.rpartition(":")
        clark = f"{{{namespaces[prefix]}}}{local}" if prefix else local
        binding = JsonBinding(schema.element(clark))
    codelists: dict[str, dict[str, str]] = {}
    codelist_path = party_dir / "codelists.toml"
    if codelist_path.is_file():
        for name, table in sources.toml(codelist_path).items():
            codelists[name] = _codelist(name, table, countries, str(codelist_path))
    # The party's type codes: a table of their own, or one of its code lists.
    type_values = dict(message_type.get("values", {}))
    if "codelist" in message_type:
        try:
            type_values.update(codelists[message_type["codelist"]])
        except KeyError:
            raise ConfigurationError(
                f"{path}: [message_type] names no code list {message_type['codelist']!r}"
            ) from None
    party = PartyFormat(
        party=data["party"],
        schema=schema,
        format=data.get("format", "xml"),
        namespaces=namespaces,
        type_xpath=type_xpath,
        type_values=type_values,
        binding=binding,
    )
    return party, codelists, namespaces


def _compile_file(
    path: Path,
    party: PartyFormat,
    catalog: SchemaCatalog,
    namespaces: Mapping[str, str],
    codelists: Mapping[str, Mapping[str, str]],
    direction: Direction,
    sources: _Sources,
) -> CompiledMapping:
    data = sources.toml(path)
    files = [path]
    rules: list[_Rule] = []
    for include in data.get("include", []):
        included = path.parent / include
        rules.extend(_parse_rules(sources.toml(included).get("map", []), str(included)))
        files.append(included)
    # What a mapping is made of: its files, by their own digests (main file first).
    made_of = tuple(
        (sources.relative(f), hashlib.sha256(sources.read(f)).hexdigest()) for f in files
    )
    rules.extend(_parse_rules(data.get("map", []), str(path)))
    canonical = catalog[CANONICAL_SCHEMA]
    source, target = (
        (party.schema, canonical)
        if direction == "to-canonical"
        else (
            canonical,
            party.schema,
        )
    )
    compiler = _Compiler(path, source, target, namespaces, codelists, direction)
    source_root = compiler.clark(data.get("source_root", ""))
    target_root = compiler.clark(data.get("target_root", ""))
    message_type = data.get("type") or path.stem
    if message_type != path.stem:
        compiler.errors.append(f"{path}: type {message_type!r} but the file is {path.name}")
    root = _Target(data.get("target_root", ""))
    compiler.tree(tuple(rules), root)
    try:
        source_decl = source.element(source_root)
        target_decl = target.element(target_root)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    compiler.check_target(root, target_decl, str(path))
    compiler.check_sources(root, source_decl)
    if compiler.errors:
        raise ConfigurationError("\n  ".join(compiler.errors))
    stylesheet = compiler.xslt(root, data["source_root"])
    try:
        xslt = etree.XSLT(etree.fromstring(stylesheet))
    except (etree.XSLTParseError, etree.XMLSyntaxError) as exc:
        raise ConfigurationError(f"{path}: compiled stylesheet rejected: {exc}") from exc
    plain = [r for r in rules if r.each is None and len(r.sources) == 1 and r.sources[0][0] != "$"]
    fields = {
        ("/".join(r.to) if direction == "to-canonical" else r.sources[0]): (
            r.sources[0] if direction == "to-canonical" else "/".join(r.to)
        )
        for r in plain
    }
    codes = {
        ("/".join(r.to) if direction == "to-canonical" else r.sources[0]): table
        for r in plain
        if r.codelist is not None and (table := compiler.codelist(r)) is not None
    }
    return CompiledMapping(
        party=party.party,
        fields=fields,
        codes=codes,
        direction=direction,
        message_type=message_type,
        path=path,
        files=made_of,
        source_schema=source,
        target_schema=target,
        source_root=source_root,
        target_root=target_root,
        xslt=xslt,
        stylesheet=stylesheet,
    )


# ---------------------------------------------------------------------------------------------
# Golden pairs

GOLDEN_PARAMS = {
    "traceId": "0f0e0d0c-0b0a-4908-8706-050403020100",
    "receivedAt": "2026-11-27T10:00:00Z",
}


def golden_pairs(mapping: CompiledMapping) -> tuple[Path, Path] | None:
    stem = mapping.path.parent / mapping.message_type
    inputs = [
        p for p in (stem.with_name(f"{stem.name}.input.{e}") for e in ("xml", "json")) if p.exists()
    ]
    expected = [
        p
        for p in (stem.with_name(f"{stem.name}.expected.{e}") for e in ("xml", "json"))
        if p.exists()
    ]
    if len(inputs) != 1 or len(expected) != 1:
        return None
    return inputs[0], expected[0]


def check_golden(mappings: MappingSet, mapping: CompiledMapping) -> list[str]:
    """Run one mapping's golden pair; return the differences (empty when it holds).

    Parameters are those of GOLDEN_PARAMS; ``$sender`` is the party (to-canonical) or the
    canonical input's source (from-canonical), ``$receiver`` the party (from-canonical only)."""
    pair = golden_pairs(mapping)
    if pair is None:
        return [f"{mapping.path}: no golden pair (<type>.input.* and <type>.expected.*)"]
    input_path, expected_path = pair
    party = mappings.party(mapping.party)
    inbound = mapping.direction == "to-canonical"
    body = input_path.read_bytes()
    source = party.read(body) if inbound else parse_xml(body)
    if inbound:
        params = {**GOLDEN_PARAMS, "sender": mapping.party, "receiver": ""}
    else:
        sender = source.findtext(f"{{{CANONICAL_NS}}}envelope/{{{CANONICAL_NS}}}source") or ""
        params = {**GOLDEN_PARAMS, "sender": sender, "receiver": mapping.party}
    try:
        mapping.source_schema.validate(source)
        produced = mapping.apply(source, params)
        mapping.target_schema.validate(produced)
    except GatewayError as exc:
        return [f"{mapping.path}: {exc.code} at {exc.path}: {exc.detail}"]
    if inbound or party.binding is None:
        expected_xml = parse_xml(expected_path.read_bytes())
        if _normalised(expected_xml) != _normalised(produced):
            return [
                f"{mapping.path}: output differs from {expected_path.name}:\n"
                f"{_normalised(produced).decode()}"
            ]
        return []
    # JSON outputs are compared as parsed values (5400 and 5400.00 are the same number).
    actual_json = party.binding.to_json(produced)
    if json.loads(expected_path.read_bytes()) != actual_json:
        return [
            f"{mapping.path}: output differs from {expected_path.name}:\n"
            f"{json.dumps(actual_json, ensure_ascii=False)}"
        ]
    return []


def _normalised(element: etree._Element) -> bytes:
    copy = etree.fromstring(etree.tostring(element), etree.XMLParser(remove_blank_text=True))
    return etree.tostring(copy, method="c14n")


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        argv = argv[1:]
    home = Path(argv[0]) if argv else Path.cwd()
    try:
        mappings = MappingSet.load(home)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 1
    failures = 0
    for mapping in mappings.mappings.values():
        problems = check_golden(mappings, mapping)
        for problem in problems:
            print(problem, file=sys.stderr)
        failures += bool(problems)
        print(
            f"{'FAIL' if problems else 'ok  '} {mapping.party} {mapping.direction}"
            f" {mapping.message_type}"
        )
    print()
    print(coverage_table(mappings))
    return 1 if failures else 0


def catalogue(mappings: MappingSet) -> list[str]:
    """Every message type of the canonical model (the enumeration of c:envelope/c:type)."""
    envelope = mappings.catalog[CANONICAL_SCHEMA].element(f"{{{CANONICAL_NS}}}message")
    for element in envelope.type.content.iter_elements():
        if element.local_name == "envelope":
            for field_decl in element.type.content.iter_elements():
                if field_decl.local_name == "type":
                    return sorted(_enumeration(field_decl) or [])
    return []


def coverage_table(mappings: MappingSet) -> str:
    """Which types each party can send (S) and receive (R), type by type of the catalogue."""
    parties = sorted(mappings.parties)
    width = max(len(t) for t in catalogue(mappings) or ["type"])
    lines = ["coverage: S = can send (to-canonical), R = can receive (from-canonical)"]
    lines.append(" " * width + "  " + "  ".join(f"{p:<11}" for p in parties))
    for message_type in catalogue(mappings):
        cells = []
        for party in parties:
            sends = (party, "to-canonical", message_type) in mappings.mappings
            receives = (party, "from-canonical", message_type) in mappings.mappings
            cells.append(f"{('S' if sends else '') + ('R' if receives else '') or '-':<11}")
        lines.append(f"{message_type:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
