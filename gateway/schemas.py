"""The schema catalog: every XSD of ``schemas/``, compiled once, content-addressed.

Validation on the hot path runs on lxml's compiled ``XMLSchema`` (libxml2); the xmlschema
components of the same files serve the mapping checker and the JSON binding, which need to walk the
content models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xmlschema
from lxml import etree

from gateway.errors import ConfigurationError, SchemaValidationError

__all__ = ["Schema", "SchemaCatalog", "SchemaFile"]


@dataclass(frozen=True)
class SchemaFile:
    """One XSD file: its target namespace, its bytes' SHA-256, and both compiled forms."""

    path: Path
    namespace: str
    sha256: str
    content: bytes = field(repr=False, compare=False)
    lxml: etree.XMLSchema = field(repr=False, compare=False)
    components: Any = field(repr=False, compare=False)  # xmlschema.XMLSchema10


@dataclass(frozen=True)
class Schema:
    """A schema id (a folder of ``schemas/``): one file per target namespace."""

    schema_id: str
    files: dict[str, SchemaFile]  # namespace → file (each with its own SHA-256)

    def file_for(self, element: etree._Element) -> SchemaFile:
        namespace = etree.QName(element).namespace or ""
        found = self.files.get(namespace)
        if found is None:
            expected = ", ".join(sorted(self.files)) or "none"
            raise SchemaValidationError(
                f"root element {element.tag} is not in a namespace of schema {self.schema_id}"
                f" (expected {expected})",
                code="schema.wrong-namespace",
                path="/",
                schema_id=self.schema_id,
            )
        return found

    def validate(self, element: etree._Element) -> SchemaFile:
        """Validate an element against this schema; raise with the first error's place."""
        schema_file = self.file_for(element)
        validator = schema_file.lxml
        if validator.validate(element):
            return schema_file
        error = next(iter(validator.error_log))  # type: ignore[call-overload]
        raise SchemaValidationError(
            error.message,
            path=error.path,
            line=error.line or None,
            schema_id=self.schema_id,
        )

    def element(self, clark_name: str) -> Any:
        """The xmlschema declaration of a global element, by ``{ns}name``."""
        namespace = etree.QName(clark_name).namespace or ""
        schema_file = self.files.get(namespace)
        decl = schema_file.components.maps.elements.get(clark_name) if schema_file else None
        if decl is None:
            raise ConfigurationError(
                f"schema {self.schema_id} declares no global element {clark_name}",
                code="config.invalid",
            )
        return decl


class SchemaCatalog:
    """All schemas under a folder, by schema id."""

    def __init__(self, schemas: dict[str, Schema]) -> None:
        self._schemas = schemas

    @classmethod
    def load(cls, directory: Path) -> SchemaCatalog:
        schemas: dict[str, Schema] = {}
        for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
            files: dict[str, SchemaFile] = {}
            for xsd in sorted(folder.glob("*.xsd")):
                content = xsd.read_bytes()
                schema_file = _compile(xsd, content)
                if schema_file.namespace in files:
                    raise ConfigurationError(
                        f"{xsd}: a second XSD for namespace {schema_file.namespace}"
                    )
                files[schema_file.namespace] = schema_file
            if files:
                schemas[folder.name] = Schema(folder.name, files)
        return cls(schemas)

    def __getitem__(self, schema_id: str) -> Schema:
        try:
            return self._schemas[schema_id]
        except KeyError:
            raise ConfigurationError(f"no schema {schema_id!r} under schemas/") from None

    def __contains__(self, schema_id: object) -> bool:
        return schema_id in self._schemas

    def __iter__(self) -> Any:
        return iter(self._schemas.values())


def _compile(path: Path, content: bytes) -> SchemaFile:
    try:
        # Schema files are the hub's own trusted configuration, read from disk by path so that
        # relative imports resolve; no network is ever used.
        doc = etree.parse(str(path), etree.XMLParser(no_network=True, resolve_entities=False))
        compiled = etree.XMLSchema(doc)
        components = xmlschema.XMLSchema10(str(path.resolve()), allow="sandbox")
    except (etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise ConfigurationError(f"{path}: not a valid XSD: {exc}") from exc
    except xmlschema.XMLSchemaException as exc:
        raise ConfigurationError(f"{path}: not a valid XSD: {exc}") from exc
    namespace = doc.getroot().get("targetNamespace", "")
    return SchemaFile(
        path, namespace, hashlib.sha256(content).hexdigest(), content, compiled, components
    )
