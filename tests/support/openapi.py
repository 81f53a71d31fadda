"""Match requests to GitHub's OpenAPI description and validate them, so the double catches wrong calls.

The vendored subset is OpenAPI 3.0 (`nullable`, boolean `exclusiveMinimum`,
`discriminator`); it is converted once to JSON Schema 2020-12 and every schema
`$ref` is made absolute, so any sub-schema validates on its own through one
`referencing` registry.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SUBSET_PATH = Path(__file__).resolve().parent.parent / "fixtures" / "github-openapi-subset.json"
BASE_URI = "urn:github-openapi-subset"
SCHEMA_REF_PREFIX = "#/components/schemas/"

# Under these keys a dict's keys are names (properties, status codes, media types), never keywords.
_NAMED_MAPS = {"properties", "patternProperties", "headers", "responses", "content", "schemas", "parameters"}
# Path parameters GitHub lets span several segments (`contents/docs/a.md`, `compare/main...feature/x`).
_MULTI_SEGMENT = {"path", "ref", "branch", "basehead"}


class _Missing:
    """Marks "no request body", which differs from a JSON `null` body."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _check_date_time(value: object) -> bool:
    """GitHub wants ISO 8601 timestamps; `jsonschema` only checks them with an optional extra."""
    if not isinstance(value, str):
        return True
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return "T" in value


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("date-time")(_check_date_time)


@dataclass(frozen=True)
class Parameter:
    """One path or query parameter of an operation, its schema already JSON Schema."""

    name: str
    location: str
    required: bool
    schema: dict[str, Any]


@dataclass
class Operation:
    """One `method path` of the subset, with what is needed to check a request and answer it."""

    spec: OpenAPI
    method: str
    template: str
    operation_id: str
    parameters: list[Parameter]
    body_schema: dict[str, Any] | None
    body_required: bool
    responses: dict[str, dict[str, Any] | None]
    _regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._regex = _template_regex(self.template)

    @property
    def literal_segments(self) -> int:
        """How specific the template is: `/pulls/comments/{id}` beats `/pulls/{number}/…`."""
        return sum(1 for seg in self.template.split("/") if seg and not seg.startswith("{"))

    def match_path(self, path: str) -> dict[str, str] | None:
        """Raw (decoded, string) path parameters when `path` fits this template."""
        found = self._regex.fullmatch(path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in found.groupdict().items()}

    def coerce_path(self, raw: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
        """Path parameters typed per the schema (`issue_number` becomes an int), plus errors."""
        values: dict[str, Any] = {}
        errors: list[str] = []
        for param in self.parameters:
            if param.location != "path":
                continue
            value, error = _coerce(raw[param.name], param.schema, self.spec)
            values[param.name] = value
            if error:
                errors.append(f"path parameter {param.name!r}: {error}")
        return values, errors

    def validate_query(self, query: Iterable[tuple[str, str]]) -> tuple[dict[str, Any], list[str]]:
        """Query parameters typed per the schema, plus errors for unknown, missing or invalid ones."""
        known = {p.name: p for p in self.parameters if p.location == "query"}
        values: dict[str, Any] = {}
        errors: list[str] = []
        for name, raw in query:
            param = known.get(name)
            if param is None:
                # GitHub ignores unknown parameters silently, which hides typos like `perpage`.
                errors.append(f"unknown query parameter {name!r} (known: {', '.join(sorted(known)) or 'none'})")
                continue
            value, error = _coerce(raw, param.schema, self.spec)
            if error is None:
                error = self.spec.first_error(param.schema, value)
            if error:
                errors.append(f"query parameter {name!r}: {error}")
            values[name] = value
        errors += [
            f"missing required query parameter {p.name!r}"
            for p in known.values()
            if p.required and p.name not in values
        ]
        return values, errors

    def validate_body(self, body: Any) -> list[str]:
        """Errors of a JSON request body (`MISSING` when none was sent) against the requestBody schema."""
        if self.body_schema is None:
            return [] if body is MISSING else [f"{self.method} {self.template} takes no request body"]
        if body is MISSING:
            return ["a JSON request body is required"] if self.body_required else []
        return [f"body{path}: {message}" for path, message in self.spec.errors(self.body_schema, body)]

    def response_schema(self, status: int) -> dict[str, Any] | None:
        """The JSON schema of the response for `status`, if the description gives one."""
        return self.responses.get(str(status))

    def validate_response(self, status: int, body: Any) -> list[str]:
        """Errors of a response against the description (used to keep the double honest)."""
        if str(status) not in self.responses:
            return [f"status {status} is not a documented response of {self.operation_id}"]
        schema = self.responses[str(status)]
        if schema is None:
            return []
        return [f"response{path}: {message}" for path, message in self.spec.errors(schema, body)]

    def sample_response(self, status: int) -> Any:
        """A minimal instance of the response schema, for the double to fill in."""
        schema = self.response_schema(status)
        return None if schema is None else self.spec.sample(schema)


class OpenAPI:
    """The vendored GitHub OpenAPI subset, converted, with request matching and validation."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = _convert(document)
        self.version: str = document["info"]["version"]
        self.registry: Registry[Any] = Registry().with_resource(BASE_URI, DRAFT202012.create_resource(self.document))
        self._validators: dict[str, Draft202012Validator] = {}
        self.operations = [
            self._operation(method.upper(), template, raw)
            for template, item in self.document["paths"].items()
            for method, raw in item.items()
        ]
        # Most specific templates first, so literal segments win over parameters.
        self.operations.sort(key=lambda op: -op.literal_segments)

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, Any]] | None:
        """The operation for `method path` and its typed path parameters, or None."""
        for op in self.operations:
            if op.method != method.upper():
                continue
            raw = op.match_path(path)
            if raw is None:
                continue
            values, errors = op.coerce_path(raw)
            if not errors:
                return op, values
        return None

    def templates_for(self, path: str) -> list[str]:
        """`METHOD template` of operations whose path fits, whatever the method (for messages)."""
        found = []
        for op in self.operations:
            raw = op.match_path(path)
            if raw is not None and not op.coerce_path(raw)[1]:
                found.append(f"{op.method} {op.template}")
        return found

    def operation(self, method: str, template: str) -> Operation:
        """The operation for an exact `method template`; KeyError when the subset lacks it."""
        wanted = normalize_template(template)
        for op in self.operations:
            if op.method == method.upper() and normalize_template(op.template) == wanted:
                return op
        raise KeyError(f"{method} {template} is not in the OpenAPI subset")

    def errors(self, schema: dict[str, Any], instance: Any) -> list[tuple[str, str]]:
        """(JSON path, message) for every way `instance` breaks `schema`."""
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = Draft202012Validator(
                schema, registry=self.registry, format_checker=_FORMATS
            )
        return [(_json_path(err.absolute_path), err.message) for err in validator.iter_errors(instance)]

    def first_error(self, schema: dict[str, Any], instance: Any) -> str | None:
        """The first error message, or None when `instance` is valid."""
        found = self.errors(schema, instance)
        return found[0][1] if found else None

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Follow `$ref`s until a schema with content."""
        while "$ref" in schema:
            schema = self.component(schema["$ref"].rsplit("/", 1)[-1])
        return schema

    def component(self, name: str) -> dict[str, Any]:
        """A converted schema of `components/schemas`."""
        return self.document["components"]["schemas"][name]

    def sample(self, schema: dict[str, Any], *, nonnull: bool = False, depth: int = 0) -> Any:
        """A minimal valid instance: required properties only, nullable ones null, lists empty.

        `nonnull` asks for a value even where null is allowed (an allOf part, an override base).
        """
        schema = self.resolve(schema)
        if depth > 30:
            raise RecursionError("schema nests too deep to sample")
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self.sample(part, nonnull=True, depth=depth + 1))
            return merged
        for key in ("anyOf", "oneOf"):
            if key in schema:
                branches = [b for b in schema[key] if self.resolve(b).get("type") != "null"]
                if len(branches) < len(schema[key]) and not nonnull:
                    return None
                return self.sample(branches[0], nonnull=nonnull, depth=depth + 1)
        types = schema.get("type", "object")
        if isinstance(types, list):
            if "null" in types and not nonnull:
                return None
            types = next(t for t in types if t != "null")
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return next((v for v in schema["enum"] if v is not None), None)
        properties = schema.get("properties", {})
        match types:
            case "object":
                return {
                    name: self.sample(properties.get(name, {}), depth=depth + 1) for name in schema.get("required", [])
                }
            case "array":
                return [self.sample(schema.get("items", {}), depth=depth + 1) for _ in range(schema.get("minItems", 0))]
            case "string":
                return _SAMPLE_STRINGS.get(schema.get("format", ""), "")
            case "integer" | "number":
                return schema.get("minimum", 0)
            case "boolean":
                return False
        return None

    def _operation(self, method: str, template: str, raw: dict[str, Any]) -> Operation:
        doc = self.document
        params = [_deref(doc, p) for p in raw.get("parameters", [])]
        body = raw.get("requestBody")
        body_schema = None
        if body is not None:
            body_schema = _closed(body["content"]["application/json"]["schema"], doc)
        responses: dict[str, dict[str, Any] | None] = {}
        for status, response in raw.get("responses", {}).items():
            content = _deref(doc, response).get("content", {})
            media = content.get("application/json") or next(iter(content.values()), None)
            responses[status] = media["schema"] if media and "schema" in media else None
        return Operation(
            spec=self,
            method=method,
            template=template,
            operation_id=raw["operationId"],
            parameters=[
                Parameter(p["name"], p["in"], bool(p.get("required")), p.get("schema", {}))
                for p in params
                if p["in"] in ("path", "query")
            ],
            body_schema=body_schema,
            body_required=bool(body and body.get("required")),
            responses=responses,
        )


@functools.cache
def load(path: Path = SUBSET_PATH) -> OpenAPI:
    """The subset, parsed and converted once per process."""
    return OpenAPI(json.loads(path.read_text()))


def normalize_template(template: str) -> str:
    """`/repos/{owner}/{repo}/issues/{n}` and `…/{issue_number}` name the same operation."""
    return re.sub(r"\{[^}]+\}", "{}", template.rstrip("/"))


_SAMPLE_STRINGS = {
    "date-time": "2024-01-01T00:00:00Z",
    "uri": "https://github.com/",
    "email": "octocat@github.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def _template_regex(template: str) -> re.Pattern[str]:
    def param(found: re.Match[str]) -> str:
        name = found.group(1)
        return f"(?P<{name}>.+)" if name in _MULTI_SEGMENT else f"(?P<{name}>[^/]+)"

    return re.compile(re.sub(r"\{(\w+)\}", param, re.escape(template).replace(r"\{", "{").replace(r"\}", "}")))


def _coerce(raw: str, schema: dict[str, Any], spec: OpenAPI) -> tuple[Any, str | None]:
    """Turn a URL string into the schema's type, as GitHub parses it."""
    types = spec.resolve(schema).get("type", "string")
    kind = next((t for t in types if t != "null"), "string") if isinstance(types, list) else types
    try:
        match kind:
            case "integer":
                return int(raw), None
            case "number":
                return float(raw), None
            case "boolean":
                if raw not in ("true", "false"):
                    return raw, f"{raw!r} is not 'true' or 'false'"
                return raw == "true", None
            case "array":
                items = spec.resolve(schema).get("items", {})
                return [_coerce(part, items, spec)[0] for part in raw.split(",")], None
    except ValueError:
        return raw, f"{raw!r} is not of type {kind!r}"
    return raw, None


def _deref(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Resolve an OpenAPI-level `$ref` (a parameter or a response, not a schema)."""
    while "$ref" in node:
        _, _, kind, name = node["$ref"].split("/")
        node = doc["components"][kind][name]
    return node


def _convert(document: dict[str, Any]) -> dict[str, Any]:
    """The whole document with every schema turned into JSON Schema 2020-12."""
    return _convert_node(document)


def _convert_node(node: Any, names: bool = False) -> Any:
    """OpenAPI 3.0 schema keywords to JSON Schema; `names` marks a dict whose keys are names."""
    if isinstance(node, list):
        return [_convert_node(item) for item in node]
    if not isinstance(node, dict):
        return node
    if names:
        return {key: _convert_node(value) for key, value in node.items()}
    out = {key: _convert_node(value, names=key in _NAMED_MAPS) for key, value in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith(SCHEMA_REF_PREFIX):
        out["$ref"] = BASE_URI + ref
    out.pop("discriminator", None)  # informative only; oneOf already decides
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), bool):
            flag = out.pop(bound)
            if flag and limit in out:
                out[bound] = out.pop(limit)
    if out.pop("nullable", False):
        out = _nullable(out)
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`nullable: true` in JSON Schema: add "null" to the type (and to an enum), or wrap in anyOf."""
    if "$ref" in schema or "type" not in schema:
        # OpenAPI 3.0 ignores siblings of $ref; a typeless schema (allOf/oneOf) has nowhere to put "null".
        return {"anyOf": [schema, {"type": "null"}]}
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    schema = {**schema, "type": [*types, "null"] if "null" not in types else types}
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]
    return schema


def _closed(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """A request body schema that refuses unknown fields.

    GitHub ignores fields it does not know, so `{"bdy": "…"}` fails late and
    quietly; the double refuses it instead. Referenced components are inlined
    so they can be closed too.
    """
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(BASE_URI):
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {name: _closed(sub, doc) for name, sub in schema["properties"].items()}
        schema.setdefault("additionalProperties", False)
    if isinstance(schema.get("items"), dict):
        schema["items"] = _closed(schema["items"], doc)
    return schema


def _json_path(path: Iterable[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
