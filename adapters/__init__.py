"""Protocol adapters: how the hub hands a translated message to a receiver's back office.

An adapter implements one method, ``_send``; :class:`BaseAdapter` adds timing, the translation of
transport errors into a :class:`DeliveryResult`, and logging. Adapters are registered under the
``guichet.adapters`` entry-point group by protocol name (``rest``, ``soap11``, …), so an integrator
adds one in its own package without touching ``gateway/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal, Protocol

import httpx
import structlog

from gateway.certs import TlsFiles
from gateway.service.tls import client_ssl_context

__all__ = [
    "Adapter",
    "AdapterFactory",
    "BaseAdapter",
    "DeliveryResult",
    "Outbound",
    "ReceiverConfig",
    "load_adapter",
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
    """``delivered``; ``rejected`` (permanent: 4xx, SOAP Client fault); ``failed`` (retryable)."""

    outcome: Outcome
    status: int | None
    response: bytes
    detail: str
    duration_ms: float


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
            outcome, status, response, detail = self._send(outbound)
        except httpx.TimeoutException as exc:
            outcome, status, response, detail = "failed", None, b"", f"timeout: {exc!r}"
        except httpx.HTTPError as exc:
            outcome, status, response, detail = "failed", None, b"", f"transport: {exc!r}"
        elapsed = (time.perf_counter() - started) * 1000
        log.info(
            "delivery.attempted",
            receiver=outbound.receiver,
            message_id=outbound.message_id,
            trace_id=outbound.trace_id,
            attempt=outbound.attempt,
            outcome=outcome,
            status=status,
            duration_ms=round(elapsed, 2),
        )
        return DeliveryResult(outcome, status, response, detail, elapsed)

    def _send(self, outbound: Outbound) -> tuple[Outcome, int | None, bytes, str]:
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


def load_adapter(protocol: str) -> AdapterFactory:
    """The adapter factory registered for a protocol name."""
    for entry in entry_points(group="guichet.adapters"):
        if entry.name == protocol:
            factory: AdapterFactory = entry.load()
            return factory
    raise LookupError(f"no adapter registered for protocol {protocol!r}")
