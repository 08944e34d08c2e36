"""Shared code lists, versioned data under ``mappings/codelists/``.

``canonical.toml``: the canonical code lists (categories, outcomes, card types, annexes, permit
kinds, languages) with their labels, each checked against the enumeration of canonical.xsd it
governs. ``countries.csv``: ISO 3166-1 alpha-3 ⇄ NIS/INS country codes, which a party's code
list may take as a whole (``shared = "countries"``).

``municipalities.csv``: every Belgian postcode with its municipality (NIS code, names) and the
region competent for employment there — the nine municipalities of the German-speaking Community
included, as a table, not a range.
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from gateway.errors import ConfigurationError, RoutingError

__all__ = [
    "LANGUAGES",
    "REGIONS",
    "CanonicalLists",
    "CodeList",
    "Countries",
    "Municipalities",
    "Municipality",
]

REGIONS = ("brussels", "flanders", "wallonia", "german-speaking")
_COLUMNS = [
    "postcode",
    "nis_code",
    "municipality_nl",
    "municipality_fr",
    "municipality_de",
    "region",
]


def _csv_rows(text: str, origin: str, columns: list[str]) -> Iterator[tuple[int, list[str]]]:
    """The rows of a code list CSV with their line numbers in the file; ``#`` lines are comments,
    the first other line is the header, which must be ``columns``."""
    data = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line and not line.startswith("#")
    ]
    if not data or next(csv.reader([data[0][1]])) != columns:
        raise ConfigurationError(f"{origin}: the columns must be {', '.join(columns)}")
    for number, line in data[1:]:
        fields = next(csv.reader([line]))
        if len(fields) != len(columns):
            raise ConfigurationError(f"{origin}: line {number} has {len(fields)} fields")
        yield number, fields


@dataclass(frozen=True)
class Municipality:
    postcode: str
    nis_code: str
    name_nl: str
    name_fr: str
    name_de: str
    region: str


class Municipalities:
    """Postcode → municipalities (a postcode may cover several) → region."""

    def __init__(self, rows: list[Municipality]) -> None:
        self._by_postcode: dict[str, list[Municipality]] = {}
        for row in rows:
            self._by_postcode.setdefault(row.postcode, []).append(row)

    @classmethod
    def parse(cls, text: str, origin: str) -> Municipalities:
        rows: list[Municipality] = []
        regions: dict[str, str] = {}
        for number, fields in _csv_rows(text, origin, _COLUMNS):
            row = Municipality(*fields)
            if not (len(row.postcode) == 4 and row.postcode.isdigit()):
                raise ConfigurationError(f"{origin}: line {number}: postcode {row.postcode!r}")
            if not (len(row.nis_code) == 5 and row.nis_code.isdigit()):
                raise ConfigurationError(f"{origin}: line {number}: NIS code {row.nis_code!r}")
            if row.region not in REGIONS:
                raise ConfigurationError(f"{origin}: line {number}: region {row.region!r}")
            if regions.setdefault(row.postcode, row.region) != row.region:
                raise ConfigurationError(
                    f"{origin}: postcode {row.postcode} lies in two regions; the competent region"
                    " must then come from the establishment unit, not the postcode"
                )
            rows.append(row)
        return cls(rows)

    def __len__(self) -> int:
        return len(self._by_postcode)

    def at(self, postcode: str) -> list[Municipality]:
        return list(self._by_postcode.get(postcode.strip(), ()))

    def region_of(self, postcode: str) -> str:
        """The region competent for a workplace at this Belgian postcode."""
        found = self._by_postcode.get(postcode.strip())
        if not found:
            raise RoutingError(
                f"{postcode!r} is not a Belgian postcode in use", code="routing.no-region"
            )
        return found[0].region


# --- canonical code lists ---------------------------------------------------------------------


@dataclass(frozen=True)
class CodeList:
    """One canonical code list: its values with their labels per language."""

    name: str
    xsd_type: str | None  # the simple type of canonical.xsd it governs
    values: dict[str, dict[str, str]]  # code → language → label

    def label(self, code: str, language: str) -> str:
        return self.values[code][language]


@dataclass(frozen=True)
class CanonicalLists:
    """``mappings/codelists/canonical.toml``: the canonical code lists, versioned."""

    version: str
    lists: dict[str, CodeList]

    @classmethod
    def parse(cls, text: str, origin: str) -> CanonicalLists:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{origin}: {exc}") from exc
        version = data.pop("version", None)
        if not isinstance(version, str) or not version:
            raise ConfigurationError(f"{origin}: needs a version")
        lists: dict[str, CodeList] = {}
        for name, table in data.items():
            stray = sorted(set(table) - {"type", "values"}) if isinstance(table, dict) else []
            if stray:
                raise ConfigurationError(f"{origin}: [{name}] has unknown keys {stray}")
            values = table.get("values") if isinstance(table, dict) else None
            if not isinstance(values, dict) or not values:
                raise ConfigurationError(f"{origin}: [{name}] needs values")
            labels: dict[str, dict[str, str]] = {}
            for code, by_language in values.items():
                if not isinstance(by_language, dict) or set(by_language) != set(LANGUAGES):
                    raise ConfigurationError(
                        f"{origin}: [{name}] {code}: a label in each of {', '.join(LANGUAGES)}"
                    )
                labels[str(code)] = {str(k): str(v) for k, v in by_language.items()}
            lists[name] = CodeList(name, table.get("type"), labels)
        if "languages" not in lists or set(lists["languages"].values) != set(LANGUAGES):
            raise ConfigurationError(
                f"{origin}: needs the [languages] list, with {', '.join(LANGUAGES)}"
            )
        return cls(version, lists)

    def check(self, enumerations: Mapping[str, list[str] | None], origin: str) -> None:
        """Each list has exactly the values of the canonical simple type it governs."""
        errors = []
        for code_list in self.lists.values():
            if code_list.xsd_type is None:
                continue
            enumeration = enumerations.get(code_list.xsd_type)
            if enumeration is None:
                errors.append(
                    f"[{code_list.name}]: canonical.xsd has no enumerated type {code_list.xsd_type}"
                )
                continue
            missing = sorted(set(enumeration) - set(code_list.values))
            extra = sorted(set(code_list.values) - set(enumeration))
            if missing or extra:
                errors.append(
                    f"[{code_list.name}] and canonical.xsd {code_list.xsd_type} differ:"
                    f" not in the list {missing}, not in the schema {extra}"
                )
        if errors:
            raise ConfigurationError(f"{origin}:\n  " + "\n  ".join(errors))


# The languages of the single window (nl, fr, de; en on the portal): every label is in each.
LANGUAGES = ("en", "fr", "nl", "de")


# --- countries --------------------------------------------------------------------------------

_COUNTRY_COLUMNS = ["iso3", "nis", "name_en", "name_fr", "name_nl"]


@dataclass(frozen=True)
class Countries:
    """``mappings/codelists/countries.csv``: ISO 3166-1 alpha-3 (canonical) ⇄ the NIS/INS
    country codes of the Belgian registers."""

    rows: tuple[dict[str, str], ...]

    @classmethod
    def parse(cls, text: str, origin: str) -> Countries:
        rows = []
        seen: dict[str, set[str]] = {"iso3": set(), "nis": set()}
        for number, fields in _csv_rows(text, origin, _COUNTRY_COLUMNS):
            row = dict(zip(_COUNTRY_COLUMNS, fields, strict=True))
            if not (len(row["iso3"]) == 3 and row["iso3"].isalpha() and row["iso3"].isupper()):
                raise ConfigurationError(f"{origin}: line {number}: ISO code {row['iso3']!r}")
            if row["nis"] and not (len(row["nis"]) == 3 and row["nis"].isdigit()):
                raise ConfigurationError(f"{origin}: line {number}: NIS code {row['nis']!r}")
            for column, values in seen.items():
                if row[column] and row[column] in values:
                    raise ConfigurationError(
                        f"{origin}: line {number}: {column} {row[column]} appears twice"
                    )
                values.add(row[column])
            rows.append(row)
        return cls(tuple(rows))

    def table(self, column: str) -> dict[str, str]:
        """A party's country codes (``column``) → canonical ISO alpha-3."""
        if column not in ("nis", "iso3"):
            raise ConfigurationError(f"countries.csv has no code column {column!r}")
        return {row[column]: row["iso3"] for row in self.rows if row[column]}

    @property
    def iso_codes(self) -> frozenset[str]:
        """Every ISO 3166-1 alpha-3 code the list holds: the canonical model's countries."""
        return frozenset(row["iso3"] for row in self.rows)
