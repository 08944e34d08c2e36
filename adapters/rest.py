"""REST delivery: one POST of the receiver-format body to ``{endpoint}/messages``.

The message id travels as ``Idempotency-Key`` so a back office that honours it applies a retried
delivery once; the trace id as ``BelGov-Trace-Id``, the Belgian e-government convention. The
outcome is the HTTP status alone (:func:`adapters.classify`): the body of the answer is kept for
the evidence, never interpreted; a 429 or 503's ``Retry-After`` is read
(:func:`adapters.retry_after`).
"""

from __future__ import annotations

import httpx

from adapters import BaseAdapter, Outbound, ReceiverConfig, Reply, classify, retry_after
from gateway import jws
from gateway.errors import ParseError
from gateway.xml import parse_json

__all__ = ["RestAdapter"]


class RestAdapter(BaseAdapter):
    """Delivers to a REST back office over one keep-alive, mutually authenticated client."""

    def __init__(self, config: ReceiverConfig) -> None:
        super().__init__(config)
        self._url = config.endpoint.rstrip("/") + "/messages"
        self._client = self._http_client()

    def _send(self, outbound: Outbound) -> Reply:
        headers = {
            "Content-Type": outbound.content_type,
            "Idempotency-Key": outbound.message_id,
            "BelGov-Trace-Id": outbound.trace_id,
            "X-Guichet-Message-Type": outbound.message_type,
        }
        if self.config.signer is not None:
            headers[jws.HEADER] = jws.sign_detached(outbound.body, self.config.signer)
        response = self._client.post(self._url, content=outbound.body, headers=headers)
        outcome = classify(response.status_code)
        detail = "" if outcome == "delivered" else _detail(response)
        return Reply(outcome, response.status_code, response.content, detail, retry_after(response))

    def close(self) -> None:
        self._client.close()


def _detail(response: httpx.Response) -> str:
    """A one-line reason: the problem+json ``detail`` when there is one, else the status line."""
    reason = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        try:
            problem = parse_json(response.content)
        except ParseError:
            return reason
        if isinstance(problem, dict) and isinstance(problem.get("detail"), str):
            return f"{reason}: {problem['detail']}"
    return reason
