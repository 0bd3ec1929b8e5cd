"""The Apicurio import archive that puts Rubin's schemas under Rubin's ids (no registry needed here; the real
registry takes it in tests/integration/test_registry_rubin.py)."""
from __future__ import annotations

import hashlib
import io
import json
import socket
import zipfile

import pytest

from schemas.errors import StampflowError
from schemas.rubin import rubin_schema_text, rubin_schema_versions
from stream.rubin_registry import RUBIN_SUBJECT, apicurio_import_archive, load_rubin_schemas, main, registry_root


def test_archive_holds_every_version_under_rubin_ids():
    with zipfile.ZipFile(io.BytesIO(apicurio_import_archive())) as zf:
        names = zf.namelist()
        contents = [json.loads(zf.read(n)) for n in names if n.endswith(".Content.json")]
        assert sorted(c["contentId"] for c in contents) == sorted(a * 100 + b for a, b in rubin_schema_versions())
        for c in contents:
            data = zf.read(f"content/{c['contentHash']}.Content.data")
            assert hashlib.sha256(data).hexdigest() == c["contentHash"]
            major, minor = divmod(c["contentId"], 100)
            assert data.decode() == rubin_schema_text(major, minor) and c["artifactType"] == "AVRO"
            assert c["canonicalHash"] is None  # computed by the registry, as Apicurio's own Confluent export does
        versions = [json.loads(zf.read(n)) for n in names if n.endswith(".ArtifactVersion.json")]
        rubin = [v for v in versions if v["artifactId"] == RUBIN_SUBJECT]
        assert [v["contentId"] for v in rubin] == [int(v["version"]) for v in rubin]
        topic = {v["artifactId"]: v["contentId"] for v in versions if v["artifactId"] != RUBIN_SUBJECT}
        assert topic["lsst-alerts-v7.1-value"] == 701 and topic["lsst-alerts-v11.1-value"] == 1101
        assert len({v["globalId"] for v in versions}) == len(versions) == 2 * len(rubin_schema_versions())
        assert any(n.endswith(".Manifest.json") for n in names)
    with zipfile.ZipFile(io.BytesIO(apicurio_import_archive(((7, 1),)))) as zf:
        assert [json.loads(zf.read(n))["contentId"] for n in zf.namelist() if n.endswith(".Content.json")] == [701]


def test_registry_root_and_unreachable_registry(capsys):
    assert registry_root("http://h:1/apis/ccompat/v7/") == "http://h:1"
    assert registry_root("http://h:1") == "http://h:1"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: connecting is refused
    url = f"http://127.0.0.1:{port}/apis/ccompat/v7"
    with pytest.raises(StampflowError, match="schema registry unreachable"):
        load_rubin_schemas(url)
    assert main([url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stampflow: schema registry unreachable") and err.count("\n") == 1
    assert main([]) == 2
