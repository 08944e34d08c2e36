"""RFC 3161 timestamps of checkpoints: requests, checked responses, and the worker that gets them.

What is timestamped, to the byte
--------------------------------
For a checkpoint (tree size ``n``, root hash ``r`` in lower-case hex, time ``t``, log id ``k``)
the *signed statement* is the RFC 8785 canonical JSON that the hub's checkpoint signature covers
(``gateway.evidence.checkpoint_statement``)::

    {"logId":"<k>","rootHash":"<r>","time":"<t>","treeSize":<n>}

— UTF-8, no whitespace, keys in that order, ``treeSize`` a JSON integer. The time stamp request
(``TimeStampReq``, RFC 3161 §2.4.1, DER) sent for it holds:

- ``version`` 1;
- ``messageImprint.hashAlgorithm``: id-sha256 (2.16.840.1.101.3.4.2.1) with NULL parameters;
- ``messageImprint.hashedMessage``: the 32 bytes of SHA-256 over the statement bytes above
  (nothing else: no prefix byte, no trailing newline);
- ``nonce``: a fresh random positive 63-bit integer per request;
- ``certReq`` TRUE (the token carries the authority's certificate); no ``reqPolicy``, no
  extensions.

It is POSTed as ``application/timestamp-query`` (RFC 3161 §3.4). A response is kept only when its
``status`` is granted (0) or grantedWithMods (1), it holds a token whose TSTInfo's
``messageImprint`` is exactly the one sent (id-sha256 and the same 32 bytes) and whose ``nonce``
is the one sent. What is stored beside the checkpoint (table ``checkpoint_timestamps``) is the
``timeStampToken`` alone: the DER CMS ``ContentInfo`` (SignedData over a TSTInfo), as
``openssl ts -verify -token_in -in token.der -data statement.json -CAfile tsa-ca.pem`` checks it.

The worker runs off the request path: checkpoints wait in a queue kept in the store (rows whose
token is NULL), tried against the configured authorities in order; when none gives a good token,
an alert is logged (``timestamp.outage``), the ``guichet_timestamp_outage`` gauge is 1, the
worker waits a capped exponential backoff before its next probe (one checkpoint per backoff
period, never the whole queue), and the exchange goes on. When an authority answers again, every
waiting checkpoint becomes due, so the queue drains; so does a restart. Checkpoints that have no
timestamp row (made while no authority was configured, or by ``Hub.checkpoint``) join the queue.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from asn1crypto import cms, core, tsp  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway import evidence
from gateway.outbox import iso, utc_now
from gateway.store import Store

__all__ = [
    "GrantedToken",
    "TimeStampResp",
    "TimestampError",
    "TimestampMetrics",
    "Timestamper",
    "build_request",
    "check_response",
    "imprint",
]

log = structlog.get_logger("guichet.timestamps")

QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
_MAX_REPLY_BYTES = 256 * 1024
_GRANTED = {"granted", "granted_with_mods"}


class TimeStampResp(core.Sequence):  # type: ignore[misc]
    """RFC 3161 §2.4.2 TimeStampResp: the token is OPTIONAL (absent when not granted), which
    asn1crypto's own definition misses."""

    _fields = [  # noqa: RUF012 - asn1crypto's declaration
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


class TimestampError(Exception):
    """An authority gave no usable token; ``reason`` is a short stable word for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def imprint(statement: bytes) -> bytes:
    """The hashedMessage of a checkpoint's request: SHA-256 over its signed statement bytes."""
    return hashlib.sha256(statement).digest()


def build_request(statement: bytes, nonce: int | None = None) -> tuple[bytes, int]:
    """The DER TimeStampReq for a checkpoint statement, and its nonce."""
    nonce = nonce if nonce is not None else secrets.randbits(63) | 1
    request = tsp.TimeStampReq(
        {
            "version": 1,
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": imprint(statement),
            },
            "nonce": nonce,
            "cert_req": True,
        }
    )
    return bytes(request.dump()), nonce


@dataclass(frozen=True)
class GrantedToken:
    token: bytes  # DER TimeStampToken (CMS ContentInfo)
    gen_time: str  # the TSTInfo's genTime, ISO 8601 UTC
    serial: int


def check_response(reply: bytes, statement: bytes, nonce: int) -> GrantedToken:
    """Parse a DER TimeStampResp and check it answers this request; its token, or why not."""
    try:
        response = TimeStampResp.load(reply, strict=True)
        status = response["status"]["status"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise TimestampError("malformed", f"not a TimeStampResp ({type(exc).__name__})") from exc
    if status not in _GRANTED:
        raise TimestampError("refused", f"status {status}")
    token = response["time_stamp_token"]
    if isinstance(token, core.Void) or token.native is None:
        raise TimestampError("malformed", "granted without a token")
    try:
        if token["content_type"].native != "signed_data":
            raise TimestampError("malformed", "the token is not CMS SignedData")
        content = token["content"]["encap_content_info"]
        if content["content_type"].native != "tst_info":
            raise TimestampError("malformed", "the token does not hold a TSTInfo")
        info = content["content"].parsed
        given = info["message_imprint"]
        algorithm = given["hash_algorithm"]["algorithm"].native
        hashed = bytes(given["hashed_message"].native)
        given_nonce = info["nonce"].native
        gen_time = info["gen_time"].native
        serial = int(info["serial_number"].native)
        if not token["content"]["signer_infos"]:
            raise TimestampError("malformed", "the token has no signer")
    except (ValueError, TypeError, KeyError) as exc:
        raise TimestampError("malformed", f"unreadable token ({type(exc).__name__})") from exc
    if algorithm != "sha256" or hashed != imprint(statement):
        raise TimestampError("bad-token", "the token's messageImprint is not the checkpoint's")
    if given_nonce != nonce:
        raise TimestampError("bad-token", "the token's nonce is not the request's")
    if not isinstance(gen_time, datetime):
        raise TimestampError("malformed", "the token has no genTime")
    return GrantedToken(bytes(token.dump(force=False)), iso(gen_time), serial)


def token_info(token: bytes) -> dict[str, Any]:
    """What a stored token says (genTime, serial, policy, imprint), for reports and tests."""
    info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
    return {
        "genTime": iso(info["gen_time"].native),
        "serial": int(info["serial_number"].native),
        "policy": info["policy"].dotted,
        "hashedMessage": bytes(info["message_imprint"]["hashed_message"].native).hex(),
        "nonce": info["nonce"].native,
    }


def tsa_label(url: str) -> str:
    """An authority as metrics, logs and the log API name it: scheme, host and port (no
    credentials, path or query)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 literal
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is no number: name the host only
        port = ""
    return f"{parts.scheme}://{host}{port}"


class TimestampMetrics:
    """Prometheus metrics of timestamping, on the hub's registry."""

    def __init__(self, registry: CollectorRegistry, store: Store) -> None:
        self.requests = Counter(
            "guichet_timestamp_requests",
            "RFC 3161 requests, by authority and outcome (granted, unavailable, refused,"
            " malformed, bad-token)",
            ["tsa", "outcome"],
            registry=registry,
        )
        self.outage = Gauge(
            "guichet_timestamp_outage",
            "1 while no configured timestamping authority gives a good token",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "guichet_timestamp_queue_depth",
            "Checkpoints awaiting an RFC 3161 token",
            registry=registry,
        )
        self.queue_depth.set_function(lambda: float(store.timestamp_queue()[0]))
        self.oldest_wait = Gauge(
            "guichet_timestamp_oldest_wait_seconds",
            "How long the oldest checkpoint awaiting a token has waited",
            registry=registry,
        )

        def oldest() -> float:
            since = store.timestamp_queue()[1]
            if since is None:
                return 0.0
            waited = utc_now() - datetime.fromisoformat(since.replace("Z", "+00:00"))
            return max(waited.total_seconds(), 0.0)

        self.oldest_wait.set_function(oldest)


class Timestamper:
    """A worker thread that gets an RFC 3161 token for each queued checkpoint."""

    def __init__(
        self,
        store: Store,
        urls: Sequence[str],
        metrics: TimestampMetrics,
        *,
        timeout_s: float = 10.0,
        backoff_s: float = 5.0,
        backoff_cap_s: float = 600.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if not urls:
            raise ValueError("a timestamper needs at least one authority")
        self.store = store
        self.urls = tuple(urls)
        self.metrics = metrics
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self.clock = clock
        self.client = httpx.Client(timeout=timeout_s, follow_redirects=False)
        self.in_outage = False
        self._failures = 0  # rounds in a row in which no authority gave a token
        self._paused_until = 0.0  # monotonic: during an outage, one probe per backoff period
        self.wake_event = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="guichet-timestamps", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self.wake_event.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.client.close()

    def _loop(self) -> None:
        try:
            # A new start: whatever waited while the hub was down is tried at once, and any
            # checkpoint made while no authority was configured joins the queue.
            now = iso(self.clock())
            self.store.write(lambda unit: unit.timestamps_due_now(now))
            self.store.write(lambda unit: unit.queue_unstamped_checkpoints(now))
        except Exception:  # the worker starts all the same
            log.exception("timestamp.error")
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # the loop must outlive any one failure
                log.exception("timestamp.error")
                worked = 0
            if not worked:
                self.wake_event.wait(timeout=self._idle_wait())
                self.wake_event.clear()

    def _idle_wait(self) -> float:
        return min(0.5, max(self.backoff_s / 4, 0.05))

    def run_once(self, limit: int = 16) -> int:
        """Queue any checkpoint not yet queued, then try the due ones; how many got a token."""
        if time.monotonic() < self._paused_until or not self.store.lead():
            return 0  # of replicas sharing a store, the sequencer asks for the tokens
        now = iso(self.clock())
        if self.store.newest_checkpoint_unqueued():  # e.g. one made by Hub.checkpoint()
            self.store.write(lambda unit: unit.queue_unstamped_checkpoints(now))
        granted = 0
        for row in self.store.timestamps_due(now, limit):
            if self._stop.is_set():
                break
            if not self._stamp(row):
                break  # no authority answers: the rest wait for their own next attempt
            granted += 1
        return granted

    def _stamp(self, row: dict[str, Any]) -> bool:
        tree_size = int(row["tree_size"])
        statement = evidence.checkpoint_statement(
            tree_size, row["root_hash"], row["time"], row["key_id"]
        )
        failures: list[str] = []
        for url in self.urls:
            label = tsa_label(url)
            try:
                token = self._request(url, statement)
            except TimestampError as exc:
                self.metrics.requests.labels(label, exc.reason).inc()
                failures.append(f"{label}: {exc.detail}")
                log.warning(
                    "timestamp.tsa-failed",
                    tsa=label,
                    tree_size=tree_size,
                    reason=exc.reason,
                    detail=exc.detail,
                )
                continue
            self._granted(tree_size, url, token)
            return True
        attempts = int(row["attempts"]) + 1
        self._failures += 1
        delay = min(self.backoff_cap_s, self.backoff_s * 2 ** (self._failures - 1))
        self._paused_until = time.monotonic() + delay
        next_at = iso(self.clock() + timedelta(seconds=delay))
        error = "; ".join(failures)[:500]
        self.store.write(lambda unit: unit.timestamp_failed(tree_size, error, next_at))
        self.in_outage = True
        self.metrics.outage.set(1)
        waiting, since = self.store.timestamp_queue()
        # The alert: no authority gave a token. Checkpoints carry no personal data, nor does this.
        log.error(
            "timestamp.outage",
            alert=True,
            tree_size=tree_size,
            attempts=attempts,
            waiting=waiting,
            waiting_since=since,
            next_attempt_at=next_at,
            failures=failures,
        )
        return False

    def _granted(self, tree_size: int, url: str, token: GrantedToken) -> None:
        label = tsa_label(url)
        self.metrics.requests.labels(label, "granted").inc()
        now = iso(self.clock())
        self.store.write(
            lambda unit: unit.timestamp_granted(tree_size, url, token.token, token.gen_time, now)
        )
        log.info("timestamp.granted", tsa=label, tree_size=tree_size, gen_time=token.gen_time)
        self._failures = 0
        self._paused_until = 0.0
        if self.in_outage:
            self.in_outage = False
            self.metrics.outage.set(0)
            # An authority answers again: everything waiting is due now, the queue drains.
            self.store.write(lambda unit: unit.timestamps_due_now(now))
            log.warning("timestamp.recovered", tsa=label, waiting=self.store.timestamp_queue()[0])

    def _request(self, url: str, statement: bytes) -> GrantedToken:
        query, nonce = build_request(statement)
        try:
            response = self.client.post(
                url, content=query, headers={"Content-Type": QUERY_TYPE, "Accept": REPLY_TYPE}
            )
        except httpx.HTTPError as exc:
            raise TimestampError("unavailable", type(exc).__name__) from exc
        if response.status_code != 200:
            raise TimestampError("unavailable", f"HTTP {response.status_code}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != REPLY_TYPE:
            raise TimestampError("malformed", f"content type {content_type or 'none'}")
        if len(response.content) > _MAX_REPLY_BYTES:
            raise TimestampError("malformed", "reply too large")
        return check_response(response.content, statement, nonce)
