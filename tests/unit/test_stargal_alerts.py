"""Star/galaxy on real alerts: the PS1 reference is never an input, and the alert evaluation scores against it."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import fastavro
import numpy as np
import pytest

from models.registry import Registry
from training.stargal.alerts import classify_alert_files, score_alerts
from training.stargal.reference import Thresholds, is_catalogue_field, label_of

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def alert_files(data_dir: Path) -> list[Path]:
    files = sorted((data_dir / "ztf_alerts_eval" / "fink-alert-simulator").glob("*.avro"))
    assert len(files) > 100, "the shared real alerts are missing"
    return files[:60]


def _scrambled(path: Path, rng: np.random.Generator) -> tuple[bytes, set[str]]:
    """The same alert with every catalogue cross-match field of its candidate set to other values."""
    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        schema = reader.writer_schema
        records = list(reader)
    changed: set[str] = set()
    for rec in records:
        cand = rec["candidate"]
        for key, value in list(cand.items()):
            if not is_catalogue_field(key) or value is None:
                continue
            if isinstance(value, float):
                cand[key] = float(rng.uniform(-5, 30))
            elif isinstance(value, int) and not isinstance(value, bool):
                cand[key] = int(rng.integers(0, 2 ** 40))
            elif isinstance(value, str):
                cand[key] = value[::-1] + "x"
            else:
                continue
            changed.add(key)
    buf = io.BytesIO()
    fastavro.writer(buf, schema, records, codec="null")
    return buf.getvalue(), changed


def test_catalogue_fields_are_references_not_inputs():
    for name in ("sgscore1", "distpsnr1", "srmag1", "sgmag2", "objectidps1", "neargaia", "maggaiabright", "classtar"):
        assert is_catalogue_field(name), name
    for name in ("magpsf", "fid", "isdiffpos", "fwhm", "sky", "rb", "drb"):
        assert not is_catalogue_field(name), name


def test_reference_label_thresholds():
    t = Thresholds()
    assert label_of(0.95, 0.3, t) == "star" and label_of(0.05, 0.3, t) == "galaxy"
    assert label_of(0.5, 0.3, t) is None and label_of(0.95, 1.5, t) is None
    assert label_of(-999.0, -999.0, t) is None  # no PS1 source


def test_changing_catalogue_fields_never_changes_a_prediction(alert_files, tmp_path):
    """The guard the issue asks for: scramble every cross-match field of real packets; predictions stay put."""
    info = Registry().resolve("stargal")
    rng = np.random.default_rng(7)
    orig_dir, scr_dir = tmp_path / "orig", tmp_path / "scrambled"
    orig_dir.mkdir()
    scr_dir.mkdir()
    changed_fields: set[str] = set()
    for f in alert_files[:40]:
        shutil.copy(f, orig_dir / f.name)
        data, changed = _scrambled(f, rng)
        (scr_dir / f.name).write_bytes(data)
        changed_fields |= changed
    assert {"sgscore1", "distpsnr1", "srmag1"} <= changed_fields
    a, dead_a, _ = classify_alert_files(info, [orig_dir])
    b, dead_b, _ = classify_alert_files(info, [scr_dir])
    assert not dead_a and not dead_b and len(a) == len(b) == 40

    def preds(results):
        return {r.candid: (p.label, p.probabilities, p.uncertainty, p.out_of_distribution)
                for r in results for p in r.predictions}

    assert preds(a) == preds(b)


def test_alert_evaluation_scores_against_ps1(alert_files):
    info = Registry().resolve("stargal")
    results, dead, messages = classify_alert_files(info, alert_files)
    scored = score_alerts(results, messages, info.name, Thresholds())
    report, rows, true, pred, ood = scored.report, scored.rows, scored.true, scored.pred, scored.ood
    assert report["n"] == len(rows) == len(true) > 10
    assert report["n_star"] + report["n_galaxy"] == report["n"]
    # recall and balanced accuracy recomputed by hand from the same rows
    stars = true == 0
    assert report["recall_star"] == pytest.approx(float((pred[stars] == 0).mean()))
    recalls = [float((pred[true == k] == k).mean()) for k in (0, 1) if (true == k).any()]
    assert report["balanced_accuracy"] == pytest.approx(float(np.mean(recalls)))
    assert 0 <= report["ece"] <= 1 and report["abstention_rate"] == pytest.approx(float(ood.mean()))
    assert sum(v["n"] for v in report["by_band"].values()) == report["n"]
    assert sum(v["n"] for v in report["by_magpsf"].values()) == report["n"]
    # every scored alert had a confident reference: PS1 within 1" and a confident score
    assert all(ref.distpsnr1 < 1.0 and (ref.sgscore1 > 0.9 or ref.sgscore1 < 0.1) for ref, _, _ in rows)


def test_cli_evaluate_alerts_prints_json_and_pictures(alert_files, tmp_path):
    alerts = tmp_path / "alerts"
    alerts.mkdir()
    for f in alert_files[:30]:
        shutil.copy(f, alerts / f.name)
    out = tmp_path / "pics"
    proc = subprocess.run([sys.executable, "-m", "stream.cli", "evaluate", "stargal", "--alerts", str(alerts),
                           "--set", f"out_dir={out}", "--set", "gallery=4"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    for key in ("n", "recall_star", "recall_galaxy", "balanced_accuracy", "abstention_rate", "ece", "by_band",
                "by_magpsf", "by_isdiffpos", "reference"):
        assert key in report
    assert (out / "reliability_alerts.png").stat().st_size > 1000


@pytest.mark.parametrize("argv, needle", [
    (["evaluate", "stargal", "--alerts", "/nonexistent/alerts"], "does not exist"),
    (["evaluate", "stargal", "--alerts", ".", "--set", "star_min=0.05"], "galaxy_max must be below star_min"),
    (["evaluate", "radio-first", "--alerts", "."], "has no evaluation on alerts"),
])
def test_cli_evaluate_alerts_errors_are_one_line(argv, needle):
    proc = subprocess.run([sys.executable, "-m", "stream.cli", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_references_are_read_from_split_multi_record_containers(data_dir):
    """A Spark-written container is split into one message per alert whose ``record`` is the decoder's
    projection (no PS1 fields); the reference must come from the message's own full container."""
    from stream.file_source import FileSource
    from schemas.packet import RawMessage
    from training.stargal.reference import record_of, reference_of

    files = sorted((data_dir / "ztf_alerts_eval" / "fink-client-tests").glob("*-c000.avro"))
    assert files, "the Spark-written containers of the shared alerts are missing"
    msgs = [m for m in FileSource(files[:1]).iter_messages() if isinstance(m, RawMessage)]
    assert len(msgs) > 10 and all(m.record is not None for m in msgs)
    assert all("sgscore1" not in m.record["candidate"] for m in msgs)  # the projection leaves it out
    refs = [reference_of(record_of(m), Thresholds()) for m in msgs]
    assert all(r is not None and r.sgscore1 is not None for r in refs)
    assert sum(r.label is not None for r in refs) > 10
