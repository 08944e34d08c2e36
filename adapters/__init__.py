"""Protocol adapters: how the hub hands a translated message to a receiver's back office.

An adapter implements one method, ``_send``, which answers a :class:`Reply`;
:class:`BaseAdapter` adds timing, the translation of transport errors into a
:class:`DeliveryResult`, and logging. Adapters are registered under the ``guichet.adapters``
entry-point group by protocol name (``rest``, ``soap11``, …), so an integrator adds one in its own
package without touching ``gateway/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import httpx
import structlog

from gateway.certs import TlsFiles
from gateway.service.tls import client_ssl_context
from gateway.signing import SigningKey

__all__ = [
    "Adapter",
    "AdapterFactory",
    "BaseAdapter",
    "DeliveryResult",
    "Outbound",
    "ReceiverConfig",
    "Reply",
    "classify",
    "load_adapter",
    "retry_after",
]

log = structlog.get_logger("guichet.delivery")


@dataclass(frozen=True)
class ReceiverConfig:
    """What an adapter knows of its receiver."""

    party: str
    protocol: str
    endpoint: str  # base URL of the back office
    schema_dir: Path  # schemas/<schema-id>/: XSDs and, for SOAP parties, the WSDL
    wsdl: str | None = None  # file name under schema_dir (SOAP parties)
    client_cert: Path | None = None  # the hub's client certificate and key (mutual TLS)
    client_key: Path | None = None
    ca: Path | None = None  # CA bundle the back office's certificate must chain to
    timeout_s: float = 10.0
    # The hub's key and certificate that sign each delivery (WS-Security / detached JWS),
    # anew at every attempt: a signature is fresh for five minutes, a retry may come later.
    signer: SigningKey | None = None


@dataclass(frozen=True)
class Outbound:
    """One message to deliver to one receiver, already in the receiver's format and validated."""

    message_id: str
    message_type: str
    receiver: str
    body: bytes  # JSON or XML document; for SOAP parties the payload element, not the envelope
    content_type: str
    trace_id: str
    attempt: int


Outcome = Literal["delivered", "rejected", "failed"]


@dataclass(frozen=True)
class DeliveryResult:
    """``delivered``; ``rejected`` (permanent: 4xx, SOAP Client fault); ``failed`` (retryable).

    ``detail`` may quote the receiver's answer: it is for the adapter's caller, never for logs or
    evidence. ``retry_after_s``: the receiver's ``Retry-After`` (429, 503), in seconds from now.
    """

    outcome: Outcome
    status: int | None
    response: bytes
    detail: str
    duration_ms: float
    retry_after_s: float | None = None


class Reply(NamedTuple):
    """What ``_send`` answers (a plain 4-tuple, without ``retry_after_s``, is accepted too)."""

    outcome: Outcome
    status: int | None
    response: bytes
    detail: str
    retry_after_s: float | None = None


class Adapter(Protocol):
    def deliver(self, outbound: Outbound) -> DeliveryResult: ...

    def close(self) -> None: ...


AdapterFactory = Callable[[ReceiverConfig], Adapter]


class BaseAdapter:
    """Timing, error translation and logging around ``_send``."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config

    def deliver(self, outbound: Outbound) -> DeliveryResult:
        started = time.perf_counter()
        try:
            reply = Reply(*self._send(outbound))
        except httpx.TimeoutException as exc:
            reply = Reply("failed", None, b"", f"timeout: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            reply = Reply("failed", None, b"", f"transport: {type(exc).__name__}")
        outcome, status, response, detail, later = reply
        elapsed = (time.perf_counter() - started) * 1000
        log.info(
            "delivery.attempted",
            receiver=outbound.receiver,
            message_id=outbound.message_id,
            trace_id=outbound.trace_id,
            attempt=outbound.attempt,
            outcome=outcome,
            status=status,
            retry_after_s=later,
            duration_ms=round(elapsed, 2),
        )
        return DeliveryResult(outcome, status, response, detail, elapsed, later)

    def _send(self, outbound: Outbound) -> Reply:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; the default has none."""

    def _http_client(self) -> httpx.Client:
        """A keep-alive client presenting the hub's certificate (mutual TLS) when configured."""
        config = self.config
        if config.client_cert and config.client_key and config.ca:
            files = TlsFiles(cert=config.client_cert, key=config.client_key, ca=config.ca)
            return httpx.Client(verify=client_ssl_context(files), timeout=config.timeout_s)
        return httpx.Client(timeout=config.timeout_s)


def classify(status: int) -> Outcome:
    """HTTP status → outcome: 2xx delivered, 408/425/429 and 5xx retried, other 4xx rejected."""
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 425, 429) or status >= 500:
        return "failed"
    return "rejected"


# Retry-After is honoured on the statuses that mean "later" (RFC 9110 §10.2.3, RFC 6585 §4).
_RETRY_AFTER_STATUSES = frozenset({429, 503})


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """A 429 or 503's ``Retry-After`` in seconds from ``now``: delta-seconds or an HTTP-date
    (RFC 9110 §10.2.3); a date already past is 0. None for other statuses, or a value that is
    neither (a malformed header is ignored, not trusted)."""
    if response.status_code not in _RETRY_AFTER_STATUSES:
        return None
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": a time in UTC with no zone said
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def load_adapter(protocol: str) -> AdapterFactory:
    """The adapter factory registered for a protocol name."""
    for entry in entry_points(group="guichet.adapters"):
        if entry.name == protocol:
            factory: AdapterFactory = entry.load()
            return factory
    raise LookupError(f"no adapter registered for protocol {protocol!r}")
