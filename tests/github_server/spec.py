"""GitHub's OpenAPI description (the subset mlcheck uses) as JSON Schema: routes, request
and response validation, and valid example objects filled from the schemas."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

SPEC_PATH = Path(__file__).parents[1] / "data" / "github-openapi-subset.json"
DOCS = "https://docs.github.com/rest"
SUPPORTED_API_VERSIONS = {"2022-11-28", "2026-03-10"}
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


# --- the OpenAPI description, made into JSON Schema


def _nullable_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable: true`` -> JSON Schema ``null`` (recursively)."""
    if isinstance(node, list):
        return [_nullable_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable_to_jsonschema(value) for key, value in node.items()}
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class Spec:
    """The subset: operations by template, and validators for any part of it."""

    URI = "urn:github-openapi-subset"

    def __init__(self, path: Path = SPEC_PATH) -> None:
        self.raw = json.loads(path.read_text())
        self.doc = _nullable_to_jsonschema(self.raw)
        self.version = self.raw["info"]["x-source"]
        resource = Resource.from_contents(self.doc, default_specification=DRAFT7)
        self.registry: Registry = Registry().with_resource(self.URI, resource)
        self._validators: dict[str, jsonschema.Draft7Validator] = {}
        self.routes: list[tuple[re.Pattern[str], str]] = []
        for template in self.doc["paths"]:
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            self.routes.append((re.compile(f"^{pattern}$"), template))

    def pointer(self, *parts: str) -> str:
        escaped = (p.replace("~", "~0").replace("/", "~1") for p in parts)
        return "#/" + "/".join(escaped)

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = self.at(node["$ref"])
        return node

    def at(self, pointer: str) -> Any:
        node = self.doc
        for part in pointer.lstrip("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def errors(self, instance: Any, pointer: str) -> list[str]:
        """Validation errors of ``instance`` against the schema at ``pointer`` ([] if valid)."""
        validator = self._validators.get(pointer)
        if validator is None:
            validator = jsonschema.Draft7Validator(
                {"$ref": self.URI + pointer},
                registry=self.registry,
                format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
            )
            self._validators[pointer] = validator
        found = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]

    def match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        for pattern, template in self.routes:
            if (m := pattern.match(path)) and method.lower() in self.doc["paths"][template]:
                return template, {k: unquote(v) for k, v in m.groupdict().items()}
        return None

    def operation(self, template: str, method: str) -> dict[str, Any]:
        return self.doc["paths"][template][method.lower()]

    def schema_name(self, name: str) -> str:
        return self.pointer("components", "schemas", name)

    # -- minimal valid instances, for the huge objects (repository, pull request) -------------

    def fill(self, schema: Any, overrides: Any = None, name: str = "") -> Any:
        """A valid instance of ``schema``: ``overrides`` where given, plain values elsewhere."""
        schema = self.resolve(schema)
        if "anyOf" in schema or "oneOf" in schema:
            options = [self.resolve(s) for s in schema.get("anyOf") or schema["oneOf"]]
            if overrides is None and any(o.get("type") == "null" for o in options):
                return None
            options = [o for o in options if o.get("type") != "null"]
            if isinstance(overrides, str):
                options = [o for o in options if "string" in schema_types(o)] or options
            return self.fill(options[0], overrides, name)
        if "allOf" in schema:
            merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
            for part in map(self.resolve, schema["allOf"]):
                merged["properties"].update(part.get("properties", {}))
                merged["required"] += part.get("required", [])
            schema = merged
        types = schema_types(schema)
        if overrides is not None and not (isinstance(overrides, dict) and "object" in types):
            return overrides
        if "null" in types and overrides is None:
            return None
        if "object" in types:
            overrides = overrides or {}
            props = schema.get("properties", {})
            out = {}
            for key in [*schema.get("required", []), *overrides]:
                if key in out:
                    continue
                out[key] = self.fill(props.get(key, {}), overrides.get(key), key)
            return out
        if "array" in types:
            return []
        if "integer" in types or "number" in types:
            return 1
        if "boolean" in types:
            return False
        if "enum" in schema:
            return schema["enum"][0]
        if schema.get("format") == "date-time":
            return iso(EPOCH)
        if schema.get("format") == "uri" or name.endswith("_url") or name == "url":
            return f"https://api.github.localhost/{name}"
        return f"{name or 'value'}"


def schema_types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", "object" if "properties" in schema else "string")
    return kind if isinstance(kind, list) else [kind]


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def param_errors(spec: Spec, value: Any, schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema, registry=spec.registry)
    return [e.message for e in validator.iter_errors(value)]


_SPEC: Spec | None = None
_SPEC_LOCK = threading.Lock()


def shared_spec() -> Spec:
    """Parsing and compiling the description is the slow part: do it once per process."""
    global _SPEC
    with _SPEC_LOCK:
        if _SPEC is None:
            _SPEC = Spec()
        return _SPEC
