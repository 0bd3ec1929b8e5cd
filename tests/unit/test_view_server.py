"""`stampflow view` without a browser: loading, matching, filtering, stamps as PNG, the HTTP API and its errors.

The results are real: `stampflow classify` runs the bundled star/galaxy model over the bundled real ZTF alerts
(one edge-of-CCD alert with NaN padding, one schema-1.3 alert that becomes a dead letter) and the committed
mock CANDELS packets, which star/galaxy does not accept (unrouted results).
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schemas.errors import StampflowError
from schemas.results import ClassificationResult, ModelPrediction, Source, Truth
from stream.cli import main
from stream.view.app import format_tables, models_meta
from stream.view.index import Query, ResultIndex
from stream.view.inputs import load_files
from stream.view.render import NAN_RGB, stretch
from stream.view.server import CSP, Viewer, make_server
from stream.worker import build_decoder
from stream.config import load_settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ALERTS = FIXTURES / "alerts"
CANDELS = FIXTURES / "packets" / "candels-mock.avro"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("view")
    results, dead = out / "results.jsonl", out / "dead"
    rc = main(["classify", str(ALERTS), str(CANDELS), "--models", "stargal", "--out", str(results),
               "--dead-letters", str(dead), "--show", "0", "--quiet"])
    assert rc == 0
    return {"results": results, "dead": dead, "out": out}


@pytest.fixture(scope="module")
def viewer(run):
    settings = load_settings()
    decoder = build_decoder(settings)
    data = load_files(run["results"], [ALERTS, CANDELS], run["dead"], decoder)
    yield Viewer(data, decoder, models_meta(settings.models.artifact_dirs))
    data.close()


@pytest.fixture(scope="module")
def http(viewer):
    server = make_server(viewer, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as res:
            return res.status, dict(res.headers), res.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_every_result_finds_its_packet(viewer):
    data = viewer.data
    assert len(data.results) == 6  # 3 decodable ZTF alerts + 3 CANDELS packets; the JPEG alert is a dead letter
    assert data.unmatched == 0
    names = {json.loads(r)["objectId"]: data.spool.entries[e].stamps for r, e in zip(data.results, data.entry_of)}
    assert names["ZTF19acyjzeo"] == ["science", "template", "difference"]
    assert names["GDS_deep2_10000"] == ["F160W"]
    assert len(data.dead_letters) == 1 and data.dead_letters[0]["stage"] == "decode"


def test_inputs_under_another_path_match_by_candid(run, tmp_path):
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    for f in ALERTS.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    data = load_files(run["results"], [copy, CANDELS], None, build_decoder(load_settings()))
    try:
        assert data.unmatched == 0
    finally:
        data.close()


def test_filters_sort_and_pages(viewer):
    rows = lambda **p: viewer.rows({k: str(v) for k, v in p.items()})  # noqa: E731
    assert rows()["total"] == 6
    assert rows(model="stargal")["total"] == 3
    padded = rows(flag="padded_stamp")["rows"]
    assert [r["objectId"] for r in padded] == ["ZTF18aaxmirj"]
    unrouted = rows(flag="unrouted")["rows"]
    assert {r["objectId"] for r in unrouted} == {"GDS_deep2_10000", "GDS_deep2_10006", "GDS_deep2_10010"}
    assert rows(model="no-such-model")["total"] == 0
    by_unc = rows(model="stargal", sort="uncertainty", order="desc")["rows"]
    uncs = [r["predictions"][0]["uncertainty"] for r in by_unc]
    assert uncs == sorted(uncs, reverse=True)
    lo = min(uncs)
    assert rows(model="stargal", umin=lo + 1e-9)["total"] == 2
    assert rows(model="stargal", umax=lo)["total"] == 1
    page2 = rows(per_page=4, page=2)
    assert page2["total"] == 6 and len(page2["rows"]) == 2
    times = [r["time"] for r in rows(sort="time")["rows"] if r["time_kind"] == "observed"]
    assert times == sorted(times)


def _result(i: int, label: str, truth: str | None, unc: float, ood: bool = False) -> dict:
    pred = ModelPrediction(model="radio-first", model_version="1.0.0", label=label, probabilities={label: 0.9},
                           uncertainty=unc, correct=None if truth is None else label == truth,
                           out_of_distribution=ood)
    return ClassificationResult(candid=i, objectId=f"obj{i}", survey="FIRST", source=Source(file="x", index=i),
                                alert_time=None, ingest_time=1000.0 + i, classified_time=1001.0 + i,
                                flags=["out_of_distribution"] if ood else [], predictions=[pred],
                                truth=None if truth is None else Truth(label=truth), code_version="t",
                                config_hash="t").record()


def test_index_disagrees_with_truth_and_nan_last():
    index = ResultIndex()
    for rec in (_result(0, "FRI", "FRI", 0.2), _result(1, "FRII", "FRI", 0.9), _result(2, "Bent", None, 0.5, True),
                _result(3, "FRI", "Bent", float("nan"))):
        index.add(rec)
    assert index.query(Query(disagrees=True))[1] == [1, 3]
    assert index.query(Query(label="FRI", disagrees=True))[1] == [3]
    assert index.query(Query(flag="out_of_distribution"))[1] == [2]
    assert index.query(Query(sort="uncertainty", descending=True))[1] == [1, 2, 0, 3]
    assert index.query(Query(sort="uncertainty"))[1] == [0, 2, 1, 3]
    with pytest.raises(StampflowError, match="sort='bogus'"):
        Query.parse({"sort": "bogus"})
    with pytest.raises(StampflowError, match="umin"):
        Query.parse({"umin": "abc"})


def test_stretch_keeps_fits_orientation_and_paints_nan():
    data = np.zeros((8, 6), dtype=np.float32)
    data[0, :] = 100.0       # FITS row 1: the bottom of the image
    data[7, 0] = np.nan
    rgb = stretch(data)
    assert rgb.shape == (8, 6, 3)
    assert rgb[-1, 3].tolist() == [255, 255, 255]   # bottom row of the picture is bright
    assert rgb[0, 0].tolist() == list(NAN_RGB)      # the NaN pixel of FITS row 8 is at the top
    assert rgb[0, 3].tolist() == [0, 0, 0]


def test_page_and_assets_are_served_with_a_strict_policy(http):
    status, headers, body = get(http + "/")
    assert status == 200 and b"/static/app.js" in body
    assert headers["Content-Security-Policy"] == CSP and "script-src 'self'" in CSP
    for name in ("app.js", "app.css"):
        status, headers, body = get(f"{http}/static/{name}")
        assert status == 200 and body
    js = get(http + "/static/app.js")[2].decode()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js
    assert get(http + "/static/../server.py")[0] == 404
    assert b"http://" not in get(http + "/")[2] and b"https://" not in get(http + "/")[2]  # no CDN


def test_api_rows_result_and_stamps(http):
    status, _, body = get(http + "/api/rows?flag=padded_stamp")
    row = json.loads(body)["rows"][0]
    assert row["stamps"] == ["science", "template", "difference"]
    status, headers, png = get(f"{http}/stamp/{row['id']}/science.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert img.shape[0] > 0 and (img == NAN_RGB).all(axis=2).any()  # the padding shows in its own colour
    big = np.asarray(Image.open(io.BytesIO(get(f"{http}/stamp/{row['id']}/science.png?size=full")[2])))
    assert big.shape[0] >= 320
    detail = json.loads(get(f"{http}/api/result/{row['id']}")[2])
    fields = dict(detail["packet"]["fields"])
    for name in ("magpsf", "band", "sgscore1", "distpsnr1", "classtar", "isdiffpos", "drb"):
        assert name in fields
    assert fields["band"] == "r" and 0 <= fields["sgscore1"] <= 1
    assert detail["result"]["predictions"][0]["model"] == "stargal"
    assert detail["result"]["candid"] == "522193343315015001"  # 64-bit ids as strings: JavaScript would round
    assert [s["padded"] for s in detail["packet"]["stamps"]] == [True, True, True]
    assert get(f"{http}/stamp/{row['id']}/nonsense.png")[0] == 404
    assert get(f"{http}/api/result/999")[0] == 404
    status, _, body = get(http + "/api/rows?sort=bogus")
    assert status == 400 and "sort" in json.loads(body)["error"]


def test_meta_marks_mock_trained_models(http):
    meta = json.loads(get(http + "/api/meta")[2])
    assert meta["models"]["stargal"]["mock"] is False
    assert meta["flags"]["unrouted"] == 3
    assert models_meta([])["deepmerge"]["mock"] is True


def test_dead_letter_bytes_download_unchanged(http):
    dead = json.loads(get(http + "/api/dead")[2])["dead_letters"]
    assert dead[0]["error_type"] == "UnsupportedPacket" and dead[0]["origin"].endswith("121540793515135000.avro#0")
    status, headers, body = get(f"{http}/dead/{dead[0]['id']}/bytes")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(
        (ALERTS / "121540793515135000.avro").read_bytes()).hexdigest()


def test_server_binds_loopback_by_default(viewer):
    from stream.cli import build_parser

    args = build_parser().parse_args(["view", "r.jsonl", "--inputs", "x"])
    assert args.host == "127.0.0.1"
    server = make_server(viewer, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()


def test_table_lists_each_model_and_says_how_to_open(run, capsys):
    rc = main(["view", str(run["results"]), "--inputs", str(ALERTS), str(CANDELS), "--table"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.splitlines()[0].startswith("stargal@2.3.0")
    assert "3 results unrouted" in out
    assert out.rstrip().splitlines()[-1].startswith(f"See the stamps next to these labels: stampflow view "
                                                    f"{run['results']} --inputs")


@pytest.mark.parametrize("content, expected", [
    (b'{"candid": 1}\nnot json\n', "line 1: not a stampflow result (missing objectId, source, predictions)"),
    (b'{"candid": 1, "objectId": "a", "source": {}, "predictions": []}\n{oops\n', "line 2 is not JSON"),
    (b"Obj\x01garbage", "Avro results unreadable at record 0"),
    (b'{"candid": 1, "objectId": "a", "source": {}, "predictions": [{"model": "m", "label": "x", '
     b'"uncertainty": "high"}]}\n', "line 1: a field does not have the result schema's type"),
    (b'[1, 2]\n', "line 1: not a result record (a JSON object), found list"),
    (b"", "holds no results"),
])
def test_malformed_results_file_is_one_line(tmp_path, capsys, content, expected):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    rc = main(["view", str(bad), "--inputs", str(ALERTS), "--table"])
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_format_tables_labels_mock_trained(tmp_path):
    rec = _result(0, "FRI", "FRI", 0.2)
    rec["predictions"][0]["model"] = "deepmerge"

    class Data:
        results = [json.dumps(rec).encode()]

    text = format_tables(Data(), {"deepmerge": {"mock": True}})
    assert text.splitlines()[0].startswith("deepmerge@1.0.0  [mock-trained")
