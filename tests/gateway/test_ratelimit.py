"""gateway.ratelimit: token buckets per party, and their evidence without a sealing flood."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from gateway import evidence
from gateway.errors import ConfigurationError, RateLimitedError, problem_body, problem_of
from gateway.ratelimit import RateLimit, RateLimiter, rate_limit_from_table

NOW = "2027-01-01T00:00:00.000000Z"


class FakeClock:
    """A monotonic clock moved by hand, and the wall clock that goes with it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime(2027, 1, 1, tzinfo=UTC) + timedelta(seconds=self.now - 1000.0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(
    limits: dict[str, RateLimit] | None = None,
    default: RateLimit | None = None,
    clock: FakeClock | None = None,
    interval: float = 10.0,
) -> tuple[RateLimiter, FakeClock]:
    clock = clock or FakeClock()
    made = RateLimiter(
        limits or {},
        default,
        clock=clock,
        wall_clock=clock.wall,
        evidence_interval_s=interval,
    )
    return made, clock


def granted(rl: RateLimiter, party: str, attempts: int) -> int:
    count = 0
    for _ in range(attempts):
        try:
            rl.take(party)
            count += 1
        except RateLimitedError:
            pass
    return count


def test_a_burst_is_granted_then_refused_with_429() -> None:
    rl, _ = limiter({"be-platform": RateLimit(rate=2, burst=5)})
    for _ in range(5):
        rl.take("be-platform")
    with pytest.raises(RateLimitedError) as refused:
        rl.take("be-platform")
    error = refused.value
    assert error.code == "request.rate-limited"
    assert problem_of(error).status == 429
    assert problem_body(error)["retryAfter"] == error.retry_after == 1  # 1 token at 2/s: 0.5 s
    assert "2 requests per second" in error.detail and "burst 5" in error.detail


def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst() -> None:
    rl, clock = limiter({"p": RateLimit(rate=8, burst=20)})  # times exact in binary
    assert granted(rl, "p", 100) == 20
    clock.advance(0.5)  # 4 tokens
    assert granted(rl, "p", 100) == 4
    clock.advance(0.0625)  # half a token: none
    assert granted(rl, "p", 10) == 0
    clock.advance(0.0625)
    assert granted(rl, "p", 10) == 1
    clock.advance(3600)  # a long quiet spell refills the burst, not more
    assert granted(rl, "p", 100) == 20


@pytest.mark.parametrize(
    ("rate", "burst", "spent", "wait", "retry_after"),
    [
        (0.1, 1, 1, 0.0, 10),  # 10 s for a token
        (0.3, 1, 1, 0.0, 4),  # 3.33 s → 4
        (0.1, 1, 1, 7.5, 3),  # 2.5 s left → 3
        (2.0, 3, 3, 0.0, 1),  # 0.5 s → 1: never 0
        (1000.0, 10, 10, 0.0, 1),
    ],
)
def test_retry_after_is_the_ceiling_of_the_wait_for_one_token(
    rate: float, burst: int, spent: int, wait: float, retry_after: int
) -> None:
    rl, clock = limiter({"p": RateLimit(rate, burst)})
    assert granted(rl, "p", spent) == spent
    clock.advance(wait)
    with pytest.raises(RateLimitedError) as refused:
        rl.take("p")
    assert refused.value.retry_after == retry_after
    clock.advance(retry_after)  # and after that long, a token is there
    rl.take("p")


def test_each_party_has_its_own_bucket() -> None:
    rl, _ = limiter({"a": RateLimit(1, 2), "b": RateLimit(1, 3)})
    assert granted(rl, "a", 10) == 2
    assert granted(rl, "b", 10) == 3  # a's refusals took nothing of b's
    records = rl.due_records(NOW)
    assert sorted((r["party"], r["refused"]) for r in records) == [("a", 8), ("b", 7)]


def test_the_default_limit_applies_to_unlisted_parties_and_none_is_unlimited() -> None:
    rl, _ = limiter({"listed": RateLimit(1, 10)}, default=RateLimit(1, 2))
    assert granted(rl, "listed", 20) == 10
    assert granted(rl, "other", 20) == 2
    assert granted(rl, "third", 20) == 2  # the default is a limit per party, not shared
    unlimited, _ = limiter({"listed": RateLimit(1, 1)}, default=None)
    assert granted(unlimited, "other", 10_000) == 10_000
    assert granted(unlimited, "listed", 3) == 1
    assert unlimited.limit("other") is None


def test_a_flood_of_refusals_makes_two_records_not_ten_thousand() -> None:
    rl, clock = limiter({"flood": RateLimit(rate=1, burst=1)}, interval=10.0)
    rl.take("flood")
    sealed: list[dict[str, object]] = []
    for _ in range(10_000):
        with pytest.raises(RateLimitedError):
            rl.take("flood")
        sealed += rl.due_records(NOW)  # what the service does after each refusal
        clock.advance(0.0001)  # 1 s in all: within the interval, and no token comes back
    assert len(sealed) == 1  # the first refusal, at once
    first = sealed[0]
    assert first["event"] == "rate.limited" and first["party"] == "flood"
    assert first["refused"] == 1
    assert first["firstAt"] == first["lastAt"] == "2027-01-01T00:00:00.000000Z"
    assert rl.due_records(NOW) == []  # nothing more until the interval is over
    tail = rl.due_records(NOW, force=True)  # periodically, and at shutdown
    assert len(tail) == 1
    assert tail[0]["refused"] == 9_999
    assert tail[0]["firstAt"] == "2027-01-01T00:00:00.000100Z"
    assert tail[0]["lastAt"] == "2027-01-01T00:00:00.999900Z"
    assert (tail[0]["rate"], tail[0]["burst"]) == (1.0, 1)
    assert rl.due_records(NOW, force=True) == []  # counts handed out are reset
    # Every field of a record: the party, counts, times and the limit, nothing of a message.
    assert set(tail[0]) == {
        "v",
        "event",
        "time",
        "party",
        "refused",
        "firstAt",
        "lastAt",
        "rate",
        "burst",
    }
    evidence.Leaf.of(tail[0])  # a record the log can seal (canonical JSON of it)


def test_a_long_flood_makes_one_record_per_interval() -> None:
    rl, clock = limiter({"flood": RateLimit(rate=0.001, burst=1)}, interval=10.0)
    rl.take("flood")
    sealed: list[dict[str, object]] = []
    refusals = 0
    for _ in range(600):  # 60 s of refusals, 10 a second
        with pytest.raises(RateLimitedError):
            rl.take("flood")
        refusals += 1
        sealed += rl.due_records(NOW)
        clock.advance(0.1)
    sealed += rl.due_records(NOW, force=True)
    assert 6 <= len(sealed) <= 7
    assert sum(int(str(r["refused"])) for r in sealed) == refusals


def test_a_periodic_call_seals_an_interval_old_count_without_force() -> None:
    rl, clock = limiter({"p": RateLimit(rate=0.001, burst=1)}, interval=10.0)
    rl.take("p")
    for _ in range(3):
        with pytest.raises(RateLimitedError):
            rl.take("p")
    assert [r["refused"] for r in rl.due_records(NOW)] == [3]  # the first was not yet sealed
    with pytest.raises(RateLimitedError):
        rl.take("p")
    assert rl.due_records(NOW) == []
    clock.advance(10)
    assert [r["refused"] for r in rl.due_records(NOW)] == [1]
    clock.advance(60)  # a new episode: its first refusal is due at once
    with pytest.raises(RateLimitedError):
        rl.take("p")
    assert [r["refused"] for r in rl.due_records(NOW)] == [1]


def test_concurrent_takes_grant_burst_plus_refill_and_no_more() -> None:
    clock = FakeClock()
    rl, _ = limiter({"p": RateLimit(rate=100, burst=50)}, clock=clock)
    lock = threading.Lock()
    granted_total = 0
    refused_total = 0
    start = threading.Barrier(8)

    def worker() -> None:
        nonlocal granted_total, refused_total
        start.wait()
        mine = refused = 0
        for step in range(2_000):
            try:
                rl.take("p")
                mine += 1
            except RateLimitedError:
                refused += 1
            if step % 100 == 0:
                with lock:  # the clock moves while the threads take: 0.01 s a step
                    clock.advance(0.01)
        with lock:
            granted_total += mine
            refused_total += refused

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    elapsed = clock.now - 1000.0
    assert abs(granted_total - (50 + 100 * elapsed)) <= 1
    assert granted_total + refused_total == 8 * 2_000
    flushed = rl.due_records(NOW, force=True)
    assert sum(int(str(r["refused"])) for r in flushed) == refused_total


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ([50, 100], "rate_limit must be a table"),
        ({"rate": 50}, "needs ['burst']"),
        ({"burst": 5}, "needs ['rate']"),
        ({"rate": 50, "burst": 100, "window": 1}, "unknown keys ['window']"),
        ({"rate": "50", "burst": 100}, "rate must be a number"),
        ({"rate": True, "burst": 100}, "rate must be a number"),
        ({"rate": 0, "burst": 100}, "rate must be positive"),
        ({"rate": -1.5, "burst": 100}, "rate must be positive"),
        ({"rate": float("inf"), "burst": 100}, "rate must be positive and finite"),
        ({"rate": float("nan"), "burst": 100}, "rate must be positive and finite"),
        ({"rate": 50, "burst": 1.5}, "burst must be a whole number"),
        ({"rate": 50, "burst": False}, "burst must be a whole number"),
        ({"rate": 50, "burst": 0}, "burst must be positive"),
    ],
)
def test_a_bad_rate_limit_table_names_its_place(table: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        rate_limit_from_table(table, "parties.toml: be-platform")
    assert refused.value.code == "config.invalid"
    assert str(refused.value).startswith("parties.toml: be-platform: ")
    assert message in str(refused.value)


def test_a_rate_limit_table_is_read() -> None:
    assert rate_limit_from_table({"rate": 50, "burst": 100}, "here") == RateLimit(50.0, 100)
    assert rate_limit_from_table({"rate": 0.5, "burst": 1}, "here") == RateLimit(0.5, 1)


def test_a_rate_limit_is_checked_when_made() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimit(0, 1)
    with pytest.raises(ValueError, match="burst"):
        RateLimit(1, 0)


def test_records_the_store_could_not_take_are_given_back() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"p": RateLimit(1.0, 1)}, None, clock=clock, evidence_interval_s=10)
    limiter.take("p")
    for _ in range(3):
        with pytest.raises(RateLimitedError):
            limiter.take("p")
    records = limiter.due_records("2026-01-01T00:00:00Z", force=True)
    assert [r["refused"] for r in records] == [3]
    limiter.give_back(records)  # the store was away
    with pytest.raises(RateLimitedError):
        limiter.take("p")
    again = limiter.due_records("2026-01-01T00:00:01Z")
    assert [r["refused"] for r in again] == [4]
    assert again[0]["firstAt"] == records[0]["firstAt"]
