"""Load Rubin's alert schemas (from the pinned ``lsst-alert-packet`` package) into a schema registry, under
Rubin's own ids (``major * 100 + minor``: 7.1 is 701), so a registry-backed worker decodes Rubin-framed alerts
exactly as it would against Rubin's registry.

Why an import archive and not ``POST /subjects/.../versions``: a Confluent-compatible registry assigns ids itself.
Rubin's own upload (``syncAllSchemasToRegistry`` in the package) puts Confluent's registry into ``IMPORT`` mode
and passes ``"id"``; Apicurio's ccompat API ignores that ``id`` (3.0.9 has no ``/mode`` endpoint at all; 3.3.3
accepts ``IMPORT`` and still assigns 1, 2, ...). Apicurio's documented way to keep ids is its admin import
(``POST /apis/registry/v3/admin/import``, the path of its Confluent-migration tool): a zip of content entities
with chosen ``contentId``s, and the ccompat API serves a schema's ``contentId`` as its Confluent id. The archive
holds what Rubin registers: subject ``alert-packet`` with one version per schema (version = id), and one
``lsst-alerts-v<M>.<m>-value`` subject per version; the content is the schema's parsing canonical form.
``canonicalHash`` is left out, as Apicurio's own Confluent export does, so the registry computes it: registering
the same schema again then returns the Rubin id (checked in tests/integration/test_registry_rubin.py), and ids
registered later continue after the highest imported one.

``python -m stream.rubin_registry URL`` loads a registry (URL: its ccompat base, ``.../apis/ccompat/v7``).
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import time
import urllib.error
import urllib.request
import zipfile

from schemas.errors import StampflowError
from schemas.rubin import rubin_schema_id, rubin_schema_text, rubin_schema_versions

__all__ = ["CCOMPAT_PATH", "RUBIN_SUBJECT", "apicurio_import_archive", "load_rubin_schemas", "registry_root"]

CCOMPAT_PATH = "/apis/ccompat/v7"
RUBIN_SUBJECT = "alert-packet"  # the subject Rubin's registry holds every alert schema under


def registry_root(url: str) -> str:
    """The registry's root URL from its ccompat base URL (``http://h:p/apis/ccompat/v7`` -> ``http://h:p``)."""
    url = url.rstrip("/")
    return url[:-len(CCOMPAT_PATH)] if url.endswith(CCOMPAT_PATH) else url


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def apicurio_import_archive(versions: tuple[tuple[int, int], ...] | None = None) -> bytes:
    """An Apicurio v3 import zip holding Rubin's alert schemas under Rubin's ids (every shipped version by default)."""
    versions = versions or rubin_schema_versions()
    now = int(time.time() * 1000)
    buf = io.BytesIO()
    global_id = 0

    def artifact(zf: zipfile.ZipFile, subject: str) -> None:
        zf.writestr(f"groups/default/artifacts/{subject}/MetaData.Artifact.json", _json({
            "groupId": None, "artifactId": subject, "artifactType": "AVRO", "name": None, "description": None,
            "labels": None, "owner": "", "createdOn": now, "modifiedBy": "", "modifiedOn": now}))

    def version(zf: zipfile.ZipFile, subject: str, name: str, order: int, content_id: int) -> None:
        nonlocal global_id
        global_id += 1
        zf.writestr(f"groups/default/artifacts/{subject}/versions/{name}.ArtifactVersion.json", _json({
            "globalId": global_id, "groupId": None, "artifactId": subject, "version": name, "versionOrder": order,
            "state": "ENABLED", "name": None, "description": None, "owner": "", "labels": None, "createdOn": now,
            "modifiedBy": "", "modifiedOn": now, "contentId": content_id}))

    def branch(zf: zipfile.ZipFile, subject: str, names: list[str]) -> None:
        zf.writestr(f"groups/default/artifacts/{subject}/branches/latest.Branch.json", _json({
            "groupId": None, "artifactId": subject, "branchId": "latest", "description": None, "systemDefined": True,
            "owner": "", "createdOn": now, "modifiedBy": "", "modifiedOn": now, "versions": names}))

    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.Manifest.json", _json({
            "systemName": "stampflow", "systemVersion": "n/a", "exportVersion": "3.0", "exportedOn": now,
            "exportedBy": "stampflow.rubin_registry",
            "systemDescription": "Rubin alert schemas from lsst-alert-packet, under Rubin's schema ids"}))
        ids = []
        for major, minor in versions:
            schema_id = rubin_schema_id(major, minor)
            data = rubin_schema_text(major, minor).encode()
            digest = hashlib.sha256(data).hexdigest()
            zf.writestr(f"content/{digest}.Content.json", _json({
                "contentId": schema_id, "canonicalHash": None, "contentHash": digest, "artifactType": "AVRO",
                "contentType": "application/json", "serializedReferences": None}))
            zf.writestr(f"content/{digest}.Content.data", data)
            ids.append(schema_id)
        artifact(zf, RUBIN_SUBJECT)
        for order, schema_id in enumerate(ids, 1):
            version(zf, RUBIN_SUBJECT, str(schema_id), order, schema_id)
        branch(zf, RUBIN_SUBJECT, [str(i) for i in ids])
        for (major, minor), schema_id in zip(versions, ids):  # TopicNameStrategy subjects, as Rubin registers
            subject = f"lsst-alerts-v{major}.{minor}-value"
            artifact(zf, subject)
            version(zf, subject, "1", 1, schema_id)
            branch(zf, subject, ["1"])
    return buf.getvalue()


def _request(url: str, data: bytes | None = None, content_type: str | None = None,
             timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise StampflowError(f"schema registry unreachable at {url}: {getattr(exc, 'reason', exc)}") from None


def _served(ccompat: str, schema_id: int) -> str | None:
    status, body = _request(f"{ccompat}/schemas/ids/{schema_id}")
    if status == 404:
        return None
    if status != 200:
        raise StampflowError(f"schema registry answered HTTP {status} for {ccompat}/schemas/ids/{schema_id}")
    return json.loads(body)["schema"]


def load_rubin_schemas(url: str) -> dict[int, str]:
    """Make the registry at ``url`` (its ccompat base URL) serve every Rubin schema under Rubin's id.

    Idempotent: ids already served with the package's schema are left alone. The import needs an empty registry
    (Apicurio refuses otherwise, so ids are never silently reassigned); a registry holding other schemas under
    Rubin's ids is an error. Returns {schema id: "major.minor"}.
    """
    ccompat = registry_root(url) + CCOMPAT_PATH
    wanted = {rubin_schema_id(*v): v for v in rubin_schema_versions()}
    served = {i: _served(ccompat, i) for i in wanted}
    wrong = [i for i, text in served.items()
             if text is not None and json.loads(text) != json.loads(rubin_schema_text(*wanted[i]))]
    if wrong:
        raise StampflowError(f"schema registry {ccompat} serves other schemas under Rubin's ids {wrong}")
    missing = tuple(wanted[i] for i, text in served.items() if text is None)
    if missing:
        status, body = _request(f"{registry_root(url)}/apis/registry/v3/admin/import",
                                apicurio_import_archive(missing), "application/zip")
        if status not in (200, 204):
            detail = " ".join(body.decode(errors="replace").split())[:300]
            raise StampflowError(f"schema registry refused the import of Rubin's schemas (HTTP {status}): {detail}"
                                 + (" (Apicurio imports only into an empty registry)" if status == 409 else ""))
        for i in (rubin_schema_id(*v) for v in missing):
            if _served(ccompat, i) is None:
                raise StampflowError(f"schema registry {ccompat} does not serve id {i} after the import")
    return {i: f"{major}.{minor}" for i, (major, minor) in wanted.items()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m stream.rubin_registry REGISTRY_URL  (e.g. http://127.0.0.1:8080/apis/ccompat/v7)",
              file=sys.stderr)
        return 2
    try:
        loaded = load_rubin_schemas(args[0])
    except StampflowError as exc:
        print(f"stampflow: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"registry": args[0], "schema_ids": loaded}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
