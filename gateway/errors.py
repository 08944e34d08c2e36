"""Every error the hub raises, and how each reaches a caller.

One tree, each stage its own branch; foreign exceptions (lxml, xmlschema, sqlite, httpx, zeep) are
translated once, where they enter, with ``raise … from exc``::

    GatewayError
    ├── InboundError                      the caller's message is refused (4xx / soap:Client)
    │   ├── AuthenticationError           auth.*        no or unknown client certificate
    │   │   └── CertificateError          cert.*        untrusted, expired, revoked, another party's
    │   ├── SignatureError                signature.*   message signature missing, invalid, stale,
    │   │                                               replayed, wrapped
    │   ├── RateLimitedError              request.rate-limited (429, Retry-After)
    │   ├── PayloadTooLargeError          request.too-large
    │   ├── UnsupportedMediaTypeError     request.unsupported-media-type
    │   ├── ParseError                    xml.* / json.* / soap.*  malformed or forbidden constructs
    │   ├── SchemaValidationError         schema.invalid  (path, line, schema id)
    │   ├── UnknownMessageTypeError       message.unknown-type
    │   ├── MappingError                  mapping.*     (a value with no code, a failed transform)
    │   ├── DomainCheckError              domain.*      (INSZ/BIS, KBO, dates)
    │   ├── AuthorisationError            authz.*
    │   ├── RoutingError                  routing.*
    │   ├── DuplicateMessageError         message.duplicate-id
    │   └── LogQueryError                 log.invalid-parameter, log.out-of-range (names it)
    ├── NotFoundError                     message.not-found, log.no-checkpoint, log.leaf-not-found,
    │                                     outbox.not-found
    ├── InvalidProofError                 log.invalid-proof  (a Merkle proof does not verify)
    ├── ConfigurationError                config.*      (bad parties, schemas or mappings at load)
    ├── StoreError                        store.*       (the store is unavailable: 503)
    ├── PayloadError                      payload.*     (a kept body cannot be read back)
    │   └── PayloadPurgedError            payload.purged (erased past retention)
    ├── DeliveryError                     delivery.*    (an adapter could not deliver)
    └── OutboxError                       outbox.*      (an operator's action on a delivery)

``PROBLEMS`` maps each code to its HTTP status and SOAP fault code; the REST problem ``type`` is
``urn:guichet:problem:<code>``, stable across releases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "PROBLEMS",
    "AuthenticationError",
    "AuthorisationError",
    "CertificateError",
    "ConfigurationError",
    "DeliveryError",
    "DomainCheckError",
    "DuplicateMessageError",
    "GatewayError",
    "InboundError",
    "InvalidProofError",
    "LogQueryError",
    "MappingError",
    "NotFoundError",
    "OutboxError",
    "ParseError",
    "PayloadError",
    "PayloadPurgedError",
    "PayloadTooLargeError",
    "Problem",
    "RateLimitedError",
    "RoutingError",
    "SchemaValidationError",
    "SignatureError",
    "StoreError",
    "UnknownMessageTypeError",
    "UnsupportedMediaTypeError",
    "problem_body",
    "problem_of",
]


class GatewayError(Exception):
    """Base of every error of the hub. ``code`` is stable; ``where`` locates the fault."""

    default_code = "gateway.error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        path: str | None = None,
        line: int | None = None,
        schema_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        self.path = path
        self.line = line
        self.schema_id = schema_id
        self.extra = extra or {}


class InboundError(GatewayError):
    default_code = "message.invalid"


class AuthenticationError(InboundError):
    default_code = "auth.unauthenticated"


class CertificateError(AuthenticationError):
    """A certificate (of the TLS connection, forwarded by a proxy, or of a message signature)
    that does not chain to a configured CA, is outside its validity, revoked, unfit for its use,
    or belongs to another party than the one it speaks for."""

    default_code = "cert.untrusted"


class SignatureError(InboundError):
    """A message signature (WS-Security on SOAP, detached JWS on REST) that is missing,
    malformed, does not verify, is stale or replayed, or does not cover what it must."""

    default_code = "signature.invalid"


class RateLimitedError(InboundError):
    """A party over its rate; ``retry_after`` (seconds) is sent as ``Retry-After``."""

    default_code = "request.rate-limited"

    def __init__(self, detail: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(detail, code=code, extra={"retryAfter": retry_after})
        self.retry_after = retry_after


class PayloadTooLargeError(InboundError):
    default_code = "request.too-large"


class UnsupportedMediaTypeError(InboundError):
    default_code = "request.unsupported-media-type"


class ParseError(InboundError):
    default_code = "xml.malformed"


class SchemaValidationError(InboundError):
    default_code = "schema.invalid"


class UnknownMessageTypeError(InboundError):
    default_code = "message.unknown-type"


class MessageTypeMismatchError(InboundError):
    """The party's type code names another message than the one its body holds."""

    default_code = "message.invalid"


class MappingError(InboundError):
    default_code = "mapping.failed"


class DomainCheckError(InboundError):
    default_code = "domain.invalid"


class AuthorisationError(InboundError):
    default_code = "authz.forbidden"


class RoutingError(InboundError):
    default_code = "routing.no-receiver"


class DuplicateMessageError(InboundError):
    default_code = "message.duplicate-id"


class LogQueryError(InboundError):
    """A query of the evidence log (``/v1/log/...``) with a malformed or impossible parameter;
    the problem names the parameter (``parameter``)."""

    default_code = "log.invalid-parameter"

    def __init__(self, detail: str, *, parameter: str, code: str | None = None) -> None:
        super().__init__(detail, code=code, extra={"parameter": parameter})
        self.parameter = parameter


class NotFoundError(GatewayError):
    default_code = "message.not-found"


class InvalidProofError(GatewayError):
    """An inclusion or consistency proof that does not verify (``gateway.proofs``)."""

    default_code = "log.invalid-proof"


class ConfigurationError(GatewayError):
    default_code = "config.invalid"


class StoreError(GatewayError):
    default_code = "store.unavailable"


class PayloadError(GatewayError):
    default_code = "payload.corrupt"


class PayloadPurgedError(PayloadError):
    default_code = "payload.purged"


class DeliveryError(GatewayError):
    default_code = "delivery.failed"


class OutboxError(GatewayError):
    """An operator's action on the outbox refused: the delivery is not a dead letter
    (``outbox.not-dead``, its state in ``extra``) or the request is malformed
    (``outbox.invalid``)."""

    default_code = "outbox.not-dead"


@dataclass(frozen=True)
class Problem:
    """How one error code reaches a caller: HTTP status, title, SOAP fault code."""

    status: int
    title: str
    # SOAP 1.1 faultcode: "Client" (the sender must change something), "Server",
    # "MustUnderstand"; SOAP 1.2 callers get env:Sender, env:Receiver, env:MustUnderstand.
    soap_fault: str


# The one table: error code → problem. A code missing here falls back on its class's default.
PROBLEMS: dict[str, Problem] = {
    "auth.unauthenticated": Problem(401, "No valid client certificate", "Client"),
    "auth.unknown-party": Problem(403, "The client certificate names no known party", "Client"),
    "auth.untrusted-proxy": Problem(
        403, "A forwarded client certificate from an address that is no configured proxy", "Client"
    ),
    "cert.untrusted": Problem(401, "Certificate does not chain to a trusted CA", "Client"),
    "cert.expired": Problem(401, "Certificate expired", "Client"),
    "cert.not-yet-valid": Problem(401, "Certificate not yet valid", "Client"),
    "cert.revoked": Problem(401, "Certificate revoked", "Client"),
    "cert.usage": Problem(401, "Certificate not issued for this use", "Client"),
    "cert.malformed": Problem(400, "Certificate cannot be read", "Client"),
    "cert.wrong-party": Problem(403, "Certificate belongs to another party", "Client"),
    "signature.missing": Problem(401, "Message signature missing", "Client"),
    "signature.malformed": Problem(400, "Message signature malformed", "Client"),
    "signature.invalid": Problem(401, "Message signature does not verify", "Client"),
    "signature.algorithm": Problem(400, "Signature algorithm not accepted", "Client"),
    "signature.stale": Problem(401, "Signature timestamp outside its window", "Client"),
    "signature.replayed": Problem(409, "Signature already seen", "Client"),
    "signature.wrapping": Problem(
        400, "Signed element moved, duplicated or not the one processed", "Client"
    ),
    "request.rate-limited": Problem(429, "Too many requests from this party", "Client"),
    "authz.forbidden": Problem(403, "Not allowed", "Client"),
    "authz.type-not-allowed": Problem(403, "This party may not send this message type", "Client"),
    "authz.receiver-not-allowed": Problem(403, "This party may not send to that party", "Client"),
    "authz.role-required": Problem(403, "This endpoint needs another role", "Client"),
    "request.not-found": Problem(404, "No such resource", "Client"),
    "request.method-not-allowed": Problem(405, "Method not allowed here", "Client"),
    "request.invalid": Problem(400, "Invalid request", "Client"),
    "request.too-large": Problem(413, "Request body too large", "Client"),
    "request.timeout": Problem(408, "Request body not received in time", "Client"),
    "request.unsupported-media-type": Problem(415, "Unsupported media type", "Client"),
    "xml.malformed": Problem(400, "Malformed XML", "Client"),
    "xml.forbidden-construct": Problem(400, "Forbidden XML construct", "Client"),
    "xml.too-deep": Problem(400, "XML nested too deeply", "Client"),
    "xml.encoding": Problem(400, "XML bodies must be UTF-8", "Client"),
    "xml.too-many-elements": Problem(400, "Too many XML elements", "Client"),
    "xml.too-many-attributes": Problem(400, "Too many attributes on an element", "Client"),
    "xml.text-too-large": Problem(400, "XML text or attribute value too large", "Client"),
    "json.number-too-large": Problem(400, "JSON number too large", "Client"),
    "json.malformed": Problem(400, "Malformed JSON", "Client"),
    "json.duplicate-key": Problem(400, "Duplicate key in JSON object", "Client"),
    "json.unknown-member": Problem(400, "JSON member not in the party's schema", "Client"),
    "json.wrong-kind": Problem(400, "JSON value of the wrong kind", "Client"),
    "json.too-deep": Problem(400, "JSON nested too deeply", "Client"),
    "soap.malformed": Problem(400, "Not a SOAP 1.1 envelope", "Client"),
    "soap.action-mismatch": Problem(400, "SOAPAction does not match the payload", "Client"),
    "soap.version-mismatch": Problem(
        400, "The envelope's SOAP version is not the media type's", "Client"
    ),
    "soap.must-understand": Problem(
        400, "A header that must be understood is not", "MustUnderstand"
    ),
    "schema.invalid": Problem(422, "Message invalid against its schema", "Client"),
    "schema.wrong-namespace": Problem(
        422, "Message root element not of the party's schema", "Client"
    ),
    "message.unknown-type": Problem(422, "Unknown message type", "Client"),
    "message.invalid": Problem(422, "Invalid message", "Client"),
    "message.duplicate-id": Problem(409, "Message id already used with other content", "Client"),
    "message.not-found": Problem(404, "No such message visible to the caller", "Client"),
    "mapping.unmapped-code": Problem(422, "A code value has no mapping", "Client"),
    "mapping.failed": Problem(422, "The message could not be translated", "Client"),
    "mapping.no-mapping": Problem(422, "No mapping for this message type and party", "Client"),
    "domain.invalid": Problem(422, "Domain check failed", "Client"),
    "domain.insz-check-digit": Problem(422, "Invalid national or BIS number", "Client"),
    "domain.insz-birthdate": Problem(422, "National number does not match birth date", "Client"),
    "domain.kbo-check-digit": Problem(422, "Invalid enterprise number", "Client"),
    "domain.unit-check-digit": Problem(422, "Invalid establishment unit number", "Client"),
    "domain.date-order": Problem(422, "Dates in the wrong order", "Client"),
    "routing.no-receiver": Problem(422, "No receiver for this message", "Client"),
    "routing.destination-mismatch": Problem(
        422, "Destination is not the competent party", "Client"
    ),
    "routing.unknown-case": Problem(422, "Unknown case", "Client"),
    "routing.unknown-correlation": Problem(422, "Answers no known message", "Client"),
    "routing.no-region": Problem(422, "No competent region for this address", "Client"),
    "log.invalid-parameter": Problem(400, "Malformed or missing log query parameter", "Client"),
    "log.out-of-range": Problem(422, "Log query parameter outside the log", "Client"),
    "log.no-checkpoint": Problem(404, "No signed checkpoint (of that size)", "Client"),
    "log.leaf-not-found": Problem(404, "No such leaf in the log", "Client"),
    "log.invalid-proof": Problem(422, "The Merkle proof does not verify", "Client"),
    "config.invalid": Problem(500, "Configuration error", "Server"),
    "store.unavailable": Problem(503, "Store unavailable", "Server"),
    "store.not-found": Problem(404, "No such store", "Server"),
    "store.too-new": Problem(500, "The store is of a newer version than this hub", "Server"),
    "payload.purged": Problem(410, "Payload erased past retention", "Server"),
    "payload.corrupt": Problem(500, "Stored payload fails authentication", "Server"),
    "payload.unknown-key": Problem(500, "Payload wrapped by a master key the hub lacks", "Server"),
    "audit.range": Problem(404, "No such range of the evidence log", "Client"),
    "delivery.failed": Problem(502, "Delivery failed", "Server"),
    "outbox.not-found": Problem(404, "No such delivery", "Client"),
    "outbox.not-dead": Problem(409, "Only a dead letter may be retried or discarded", "Client"),
    "outbox.invalid": Problem(400, "Malformed outbox request", "Client"),
    "gateway.error": Problem(500, "Internal error", "Server"),
}


def problem_body(error: GatewayError, trace_id: str | None = None) -> dict[str, Any]:
    """The RFC 9457 problem of an error (fields also carried by SOAP Fault details)."""
    problem = problem_of(error)
    body: dict[str, Any] = {
        "type": f"urn:guichet:problem:{error.code}",
        "title": problem.title,
        "status": problem.status,
        "detail": error.detail,
        "code": error.code,
    }
    if trace_id is not None:
        body["traceId"] = trace_id
    where = {"path": error.path, "line": error.line, "schemaId": error.schema_id}
    body.update({key: value for key, value in where.items() if value is not None})
    body.update(error.extra)
    return body


def problem_of(error: GatewayError) -> Problem:
    """The problem entry for an error (its code, else its class default, else internal)."""
    return (
        PROBLEMS.get(error.code)
        or PROBLEMS.get(type(error).default_code)
        or PROBLEMS["gateway.error"]
    )
