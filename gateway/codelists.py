"""Shared code lists, versioned data under ``mappings/codelists/``.

``municipalities.csv``: every Belgian postcode with its municipality (NIS code, names) and the
region competent for employment there — the nine municipalities of the German-speaking Community
included, as a table, not a range.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

from gateway.errors import ConfigurationError, RoutingError

__all__ = ["REGIONS", "Municipalities", "Municipality"]

REGIONS = ("brussels", "flanders", "wallonia", "german-speaking")
_COLUMNS = [
    "postcode",
    "nis_code",
    "municipality_nl",
    "municipality_fr",
    "municipality_de",
    "region",
]


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
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        reader = csv.reader(lines)
        header = next(reader, None)
        if header != _COLUMNS:
            raise ConfigurationError(f"{origin}: the columns must be {', '.join(_COLUMNS)}")
        rows: list[Municipality] = []
        regions: dict[str, str] = {}
        for number, fields in enumerate(reader, start=2):
            if len(fields) != len(_COLUMNS):
                raise ConfigurationError(f"{origin}: row {number} has {len(fields)} fields")
            row = Municipality(*fields)
            if not (len(row.postcode) == 4 and row.postcode.isdigit()):
                raise ConfigurationError(f"{origin}: row {number}: postcode {row.postcode!r}")
            if not (len(row.nis_code) == 5 and row.nis_code.isdigit()):
                raise ConfigurationError(f"{origin}: row {number}: NIS code {row.nis_code!r}")
            if row.region not in REGIONS:
                raise ConfigurationError(f"{origin}: row {number}: region {row.region!r}")
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
