"""Per-party rate limits: a token bucket per party, and evidence of refusals without a flood.

Each party has a bucket of ``burst`` tokens, refilled at ``rate`` tokens per second; a request
takes one token, and a party whose bucket is empty is refused with ``request.rate-limited``
(HTTP 429) and a ``Retry-After`` of the whole seconds until its next token.

Every refusal reaches the evidence log, but not one leaf per refused request: a party flooding the
hub would otherwise make it sign and store as fast as it is refused. The limiter counts refusals
per party and hands out at most one ``rate.limited`` record per party per
``evidence_interval_s``: the first refusal of an episode is due at once (a caller seals
:meth:`RateLimiter.due_records` after each refusal), the refusals after it accumulate, and the
next record (a refusal once the interval has passed, a periodic :meth:`RateLimiter.due_records`,
or ``force=True`` at shutdown) carries their count. A record holds the party id, the count, the
first and last refusal times and the limit — never anything of a message.

The buckets live in the process: each replica of the hub has buckets of its own, so with ``n``
replicas behind a load balancer a party may get up to ``n`` times its limit in all. The limit
protects each process; set it per replica (the rate divided by the number of replicas for a
global budget). A restart fills every bucket again, and refusals not yet sealed when a process is
killed (not stopped) are lost from the evidence — at most one interval's count per party.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway import evidence
from gateway.errors import ConfigurationError, RateLimitedError

__all__ = ["RateLimit", "RateLimiter", "rate_limit_from_table"]


@dataclass(frozen=True)
class RateLimit:
    """``rate`` tokens per second, at most ``burst`` at once (a ``burst`` of requests may come
    together after a quiet spell)."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"a rate limit's rate must be a positive number, not {self.rate!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(
                f"a rate limit's burst must be a whole number >= 1, not {self.burst!r}"
            )


_RATE_LIMIT_KEYS = ("rate", "burst")


def rate_limit_from_table(table: Any, where: str) -> RateLimit:
    """Read a ``[parties.<id>.rate_limit]`` table, e.g. ``{rate = 50, burst = 100}``: both keys,
    no others; ``rate`` a positive number (tokens per second), ``burst`` a positive whole
    number. A :class:`ConfigurationError` naming ``where`` otherwise."""
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"{where}: rate_limit must be a table")
    stray = sorted(set(table) - set(_RATE_LIMIT_KEYS))
    if stray:
        raise ConfigurationError(f"{where}: [rate_limit] has unknown keys {stray}")
    missing = [key for key in _RATE_LIMIT_KEYS if key not in table]
    if missing:
        raise ConfigurationError(f"{where}: [rate_limit] needs {missing}")
    rate, burst = table["rate"], table["burst"]
    # bool is an int to Python, never a rate or a count here.
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise ConfigurationError(f"{where}: [rate_limit] rate must be a number, not {rate!r}")
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigurationError(f"{where}: [rate_limit] rate must be positive and finite")
    if isinstance(burst, bool) or not isinstance(burst, int):
        raise ConfigurationError(
            f"{where}: [rate_limit] burst must be a whole number, not {burst!r}"
        )
    if burst < 1:
        raise ConfigurationError(f"{where}: [rate_limit] burst must be positive")
    return RateLimit(float(rate), burst)


@dataclass
class _Bucket:
    tokens: float
    updated: float  # the clock's reading when ``tokens`` was last brought up to date


@dataclass
class _Refusals:
    """A party's refusals not yet in a record, and when its last record was made."""

    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    recorded: float | None = None  # the clock's reading at the last record (None: never)
    due: bool = False  # the first refusal of an episode: to be recorded at once


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RateLimiter:
    """Token buckets per party (``limits``; ``default`` for a party not listed, None: such a
    party is not limited). Thread-safe; :meth:`take` is O(1).

    ``clock`` (seconds, monotonic) drives the buckets and the evidence interval; ``wall_clock``
    gives the refusal times of the records."""

    def __init__(
        self,
        limits: Mapping[str, RateLimit],
        default: RateLimit | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        evidence_interval_s: float = 10.0,
        wall_clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not evidence_interval_s > 0:
            raise ValueError("evidence_interval_s must be positive")
        self._limits = dict(limits)
        self._default = default
        self._clock = clock
        self._wall_clock = wall_clock
        self._interval = evidence_interval_s
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._refusals: dict[str, _Refusals] = {}

    def limit(self, party: str) -> RateLimit | None:
        """The party's limit (its own, else the default; None: unlimited)."""
        return self._limits.get(party, self._default)

    def take(self, party: str) -> None:
        """Take one of the party's tokens, or raise :class:`RateLimitedError` (``retry_after``:
        the whole seconds until a token is back). After a refusal the caller seals
        :meth:`due_records`: the first refusal of an episode is due at once."""
        limit = self.limit(party)
        if limit is None:
            return
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(party)
            if bucket is None:
                bucket = self._buckets[party] = _Bucket(float(limit.burst), now)
            elif now > bucket.updated:
                bucket.tokens = min(
                    float(limit.burst), bucket.tokens + (now - bucket.updated) * limit.rate
                )
                bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = (1.0 - bucket.tokens) / limit.rate
            self._refused(party, now)
        retry_after = max(1, math.ceil(wait))
        raise RateLimitedError(
            f"{party} is over its rate limit of {limit.rate:g} requests per second"
            f" (burst {limit.burst}); retry after {retry_after} s",
            retry_after=retry_after,
        )

    def _refused(self, party: str, now: float) -> None:
        """Count a refusal (under the lock)."""
        refusals = self._refusals.get(party)
        if refusals is None:
            refusals = self._refusals[party] = _Refusals()
        moment = self._wall_clock()
        if refusals.count == 0:
            refusals.first_at = moment
        refusals.count += 1
        refusals.last_at = moment
        if refusals.recorded is None or now - refusals.recorded >= self._interval:
            refusals.due = True

    def give_back(self, records: list[dict[str, Any]]) -> None:
        """Records that could not be sealed (the store away): their counts are counted again,
        to be sealed with the next record of their party."""
        with self._lock:
            for record in records:
                refusals = self._refusals.setdefault(str(record["party"]), _Refusals())
                refusals.count += int(record["refused"])
                first = datetime.fromisoformat(str(record["firstAt"]).replace("Z", "+00:00"))
                last = datetime.fromisoformat(str(record["lastAt"]).replace("Z", "+00:00"))
                refusals.first_at = min(first, refusals.first_at or first)
                refusals.last_at = max(last, refusals.last_at or last)
                refusals.due = True

    def due_records(self, now_iso: str, *, force: bool = False) -> list[dict[str, Any]]:
        """The ``rate.limited`` evidence records to seal now (made at ``now_iso``): one for each
        party whose first refusal of an episode is not yet recorded, or whose refusals counted
        since its last record are an interval old; with ``force``, one for every party with
        refusals not yet recorded (periodically and at shutdown, so that an episode's tail is
        sealed too). The counts handed out are reset: seal what is returned."""
        records: list[dict[str, Any]] = []
        with self._lock:
            now = self._clock()
            for party, refusals in self._refusals.items():
                if refusals.count == 0:
                    continue
                interval_over = (
                    refusals.recorded is None or now - refusals.recorded >= self._interval
                )
                if not (force or refusals.due or interval_over):
                    continue
                limit = self.limit(party)
                records.append(
                    evidence.record(
                        "rate.limited",
                        now_iso,
                        party=party,
                        refused=refusals.count,
                        firstAt=_iso(refusals.first_at),
                        lastAt=_iso(refusals.last_at),
                        rate=limit.rate if limit else None,
                        burst=limit.burst if limit else None,
                    )
                )
                refusals.count = 0
                refusals.first_at = refusals.last_at = None
                refusals.recorded = now
                refusals.due = False
        return records
