"""Writer schemas for Confluent-wire messages (magic byte 0, 4-byte big-endian schema id, schemaless Avro body).

Two providers, one protocol (`SchemaProvider`: ``get(schema_id) -> schema JSON text``), and `SchemaResolver`,
which is what the settings build (``SchemaResolver(schema_dir=..., registry_url=...)``, directory first):

* `DirectorySchemaResolver`: a local directory holding one file per schema id, named ``<id>.avsc`` (the schema
  JSON, exactly what the registry's ``/schemas/ids/<id>`` returns in its ``"schema"`` field). Flat files were
  chosen over ``<id>/`` directories because a Confluent schema id always names one self-contained schema
  (references are already resolved by the registry), so one file per id is the whole story.
* `RegistrySchemaResolver`: a Confluent-compatible schema registry (Rubin's included):
  ``GET {url}/schemas/ids/{id}`` -> ``{"schema": "..."}`` with urllib from the standard library, a timeout, and
  a per-id cache (schemas behind an id are immutable, so the cache never expires).

* `RubinPackageResolver`: Rubin's own schemas from the pinned ``lsst-alert-packet`` package (`schemas.rubin`),
  under Rubin's ids (``major * 100 + minor``: 7.1 is 701). It answers when no registry is configured, so a
  Rubin stream decodes with no registry at all; with a registry, the registry is the authority (an outage must
  stay an outage, not silently turn into "whatever this package version says").

`make_resolver` builds one from a string: ``http://`` / ``https://`` -> registry, anything else -> directory,
None -> the Rubin package.

Errors, split by whose fault they are:

* the *packet's*: an id the registry does not know (HTTP 404), no ``<id>.avsc`` in the schema directory, an id
  that is no Rubin schema the package ships (when it is the resolver), a schema
  that is not valid JSON (or not an Avro schema) -> `SchemaResolutionError`, a `DecodeError`: the message is
  dead-lettered with a clear reason and the stream goes on;
* the *registry's*: connection refused, DNS failure, timeout, a dropped connection, HTTP 5xx (and any other
  HTTP error but 404: 401/403 credentials, 429 throttling, ...) -> `schemas.errors.TransientError` (not a
  `PacketError`), one line naming the URL and the schema id. Valid alerts must not be dead-lettered and
  committed because the registry is down: the worker stops without committing, and a restart retries them.
  Failures are never cached, so the next `get` asks again.
"""
from __future__ import annotations

import base64
import http.client
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Protocol, runtime_checkable

from schemas.errors import DecodeError, StampflowError, TransientError

__all__ = ["SchemaResolver", "SchemaProvider", "DirectorySchemaResolver", "RegistrySchemaResolver",
           "RubinPackageResolver", "SchemaResolutionError", "make_resolver"]


class SchemaResolutionError(DecodeError):
    """The writer schema for a Confluent-wire message could not be obtained."""


@runtime_checkable
class SchemaProvider(Protocol):
    """Anything with ``get(schema_id) -> schema JSON text`` can feed a Decoder: it raises `SchemaResolutionError`
    when the id has no (usable) schema, `TransientError` when the source of schemas is unavailable."""

    def get(self, schema_id: int) -> str: ...


class SchemaResolver:
    """The configured resolver: a local schema directory, a registry URL, or both (directory first, so local
    files can pin or override ids; the registry answers the rest). Without a registry, Rubin's schemas from the
    ``lsst-alert-packet`` package answer the ids the directory does not have (``rubin_package=False`` turns that
    off; it cannot be combined with a registry, which is the authority for its ids)."""

    def __init__(self, schema_dir: str | Path | None = None, registry_url: str | None = None, *,
                 timeout: float = 5.0, auth: tuple[str, str] | None = None, rubin_package: bool | None = None):
        self.providers: list[SchemaProvider] = []
        if schema_dir is not None:
            self.providers.append(DirectorySchemaResolver(schema_dir))
        if registry_url is not None:
            if rubin_package:
                raise StampflowError("the Rubin package schemas are the fallback when no schema registry is "
                                     "configured; a registry answers for its own ids")
            self.providers.append(RegistrySchemaResolver(registry_url, timeout=timeout, auth=auth))
        elif rubin_package is not False:
            self.providers.append(RubinPackageResolver())
        if not self.providers:
            raise StampflowError("a schema resolver needs a schema directory, a schema registry URL or the Rubin "
                                 "package schemas")

    def get(self, schema_id: int) -> str:
        """The first provider that has the id wins; `TransientError` from one (registry down) propagates."""
        errors = []
        for provider in self.providers:
            try:
                return provider.get(schema_id)
            except SchemaResolutionError as exc:
                errors.append(str(exc))
        raise SchemaResolutionError("; ".join(errors))

    def __repr__(self) -> str:
        return f"SchemaResolver({', '.join(map(repr, self.providers))})"


class DirectorySchemaResolver:
    """Schemas from ``<directory>/<id>.avsc`` files (read once per id, then cached)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise StampflowError(f"schema directory does not exist: {self.directory}")
        self._cache: dict[int, str] = {}

    def get(self, schema_id: int) -> str:
        text = self._cache.get(schema_id)
        if text is not None:
            return text
        path = self.directory / f"{schema_id}.avsc"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SchemaResolutionError(f"schema id {schema_id} not found: no {path}") from None
        except OSError as exc:
            raise SchemaResolutionError(f"schema id {schema_id}: cannot read {path}: {exc}") from None
        text = _unwrap(text, f"{path}")
        self._cache[schema_id] = text
        return text

    def __repr__(self) -> str:
        return f"DirectorySchemaResolver({str(self.directory)!r})"


class RubinPackageResolver:
    """Rubin's alert schemas from the pinned ``lsst-alert-packet`` package, by Rubin's ids (7.1 -> 701).

    The package is only read when an id is asked for, so a worker that never sees Confluent framing pays nothing.
    An id the package does not ship is the packet's problem (`SchemaResolutionError`: dead letter), named with
    the ids it does ship.
    """

    def get(self, schema_id: int) -> str:
        from schemas.rubin import rubin_package_version, rubin_schema_by_id, rubin_schema_versions
        try:
            text = rubin_schema_by_id(schema_id)
        except ImportError as exc:  # the package is a dependency; a broken install is an environment error
            raise StampflowError(f"cannot load Rubin alert schemas: {exc}") from None
        if text is None:
            shipped = ", ".join(str(major * 100 + minor) for major, minor in rubin_schema_versions())
            raise SchemaResolutionError(
                f"schema id {schema_id} is not a Rubin alert schema id: lsst-alert-packet "
                f"{rubin_package_version()} ships ids {shipped} (major*100+minor), and no schema registry is "
                f"configured")
        return text

    def __repr__(self) -> str:
        return "RubinPackageResolver()"


class RegistrySchemaResolver:
    """A Confluent-compatible schema registry at ``url`` (``GET {url}/schemas/ids/{id}``), cached per id.

    Credentials may be given as ``auth=(user, password)`` or in the URL (``https://user:pw@host``); they are sent
    as HTTP basic auth and never appear in error messages.
    """

    def __init__(self, url: str, *, timeout: float = 5.0, auth: tuple[str, str] | None = None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StampflowError(f"schema registry URL must be http(s)://host[:port][/path], got {url!r}")
        if parts.username is not None and auth is None:
            auth = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.timeout = timeout
        self._auth_header = None
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            self._auth_header = f"Basic {token}"
        self._cache: dict[int, str] = {}
        self._lock = threading.Lock()

    def get(self, schema_id: int) -> str:
        text = self._cache.get(schema_id)
        if text is not None:
            return text
        with self._lock:
            text = self._cache.get(schema_id)
            if text is None:
                text = self._fetch(schema_id)
                self._cache[schema_id] = text
        return text

    def _fetch(self, schema_id: int) -> str:
        url = f"{self.url}/schemas/ids/{int(schema_id)}"
        request = urllib.request.Request(url, headers={
            "Accept": "application/vnd.schemaregistry.v1+json, application/json"})
        if self._auth_header:
            request.add_header("Authorization", self._auth_header)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                detail = str(json.loads(exc.read() or b"{}").get("message", ""))
            except Exception:
                pass
            detail = _one_line(detail)
            if exc.code == 404:  # this id is unknown: the packet's problem
                raise SchemaResolutionError(f"schema id {schema_id} not found at {url}"
                                            + (f": {detail}" if detail else "")) from None
            what = {401: "rejected the credentials", 403: "refused access"}.get(exc.code, "failed")
            raise TransientError(f"schema registry {what} (HTTP {exc.code}) for schema id {schema_id} at {url}"
                                 + (f": {detail}" if detail else "")) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, DNS, timeout, reset
            reason = getattr(exc, "reason", None) or exc
            raise TransientError(f"schema registry unreachable for schema id {schema_id} at {url}: "
                                 f"{_one_line(str(reason)) or exc.__class__.__name__}") from None
        try:
            payload = json.loads(body)
        except ValueError:
            raise SchemaResolutionError(f"schema registry {url} returned non-JSON: {body[:80]!r}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("schema"), str):
            raise SchemaResolutionError(f"schema registry {url} returned no 'schema' string")
        schema_type = payload.get("schemaType", "AVRO")
        if schema_type != "AVRO":
            raise SchemaResolutionError(f"schema id {schema_id} is {schema_type}, not AVRO")
        return _unwrap(payload["schema"], url)

    def __repr__(self) -> str:
        return f"RegistrySchemaResolver({self.url!r})"


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _unwrap(text: str, where: str) -> str:
    """Accept a bare schema or a registry-style ``{"schema": "..."}`` document; check that it is JSON."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SchemaResolutionError(f"schema in {where} is not valid JSON: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("schema"), str) and "type" not in doc:
        return _unwrap(doc["schema"], where)
    return text


def make_resolver(spec: "str | Path | SchemaProvider | None") -> SchemaProvider:
    """``http(s)://...`` -> `RegistrySchemaResolver`; a path -> `DirectorySchemaResolver`; a resolver as is;
    None -> `RubinPackageResolver` (no registry configured: Rubin's ids resolve from the package)."""
    if spec is None:
        return RubinPackageResolver()
    if isinstance(spec, SchemaProvider):
        return spec
    text = str(spec)
    if text.startswith(("http://", "https://")):
        return RegistrySchemaResolver(text)
    return DirectorySchemaResolver(text)
