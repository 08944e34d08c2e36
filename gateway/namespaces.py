"""The namespaces of the hub's own vocabularies (parties' namespaces live in their party.toml)."""

CANONICAL_NS = "urn:be:guichet:canonical:1"  # schemas/canonical/
HUB_NS = "urn:be:guichet:hub:1"  # schemas/hub/: receipts, SOAP headers and fault details
SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
