"""SDSS spin CNN: catalogue/image readers, mock writer and its lambda_R mapping, model, train/evaluate, replay."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from schemas.errors import StampflowError
from training.spin import FAMILY, archive, mocks
from training.spin import data as sd
from training.spin import network as sm


@pytest.fixture(scope="module")
def mock_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("spin")
    mocks.write_mock_spin_set(out, n=40, seed=5)
    return out


def _write_csv(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def test_mock_set_layout_and_reader(mock_dir):
    cat = mock_dir / sd.CATALOGUE_NAME
    with open(cat) as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["filename", "lambda_R"] and len(rows) == 41
    ds = sd.read_spin_dir(mock_dir)
    assert len(ds) == 40 and ds.columns == {"image": "filename", "target": "lambda_R"} and ds.mock is not None
    img = ds.images[0]
    assert img.dtype == np.uint8 and img.shape == (120, 120, 3)
    np.testing.assert_allclose(ds.targets, [float(r[1]) for r in rows[1:]])
    assert 0.01 <= ds.targets.min() and ds.targets.max() <= 0.85
    x = sd.stack_resized(ds.images[:3], sm.input_spec())
    assert x.shape == (3, 80, 80, 3) and x.dtype == np.float32 and x.max() <= 255.0
    # the centre of a mock galaxy is bright in every channel
    assert (x[:, 40, 40, :] > x[:, 2, 2, :]).all()


def test_catalogue_variants_and_errors(tmp_path, mock_dir):
    from PIL import Image

    (tmp_path / "images").mkdir()
    rgb = np.zeros((50, 60, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "images" / "8485-1901.png")
    Image.fromarray(rgb).save(tmp_path / "7443-12703.jpg")
    _write_csv(tmp_path / "cat.csv", ["PlateIFU", "Lambda_Re", "other"],
               [["8485-1901", "0.42", "x"], ["7443-12703", "0.1", "y"], ["7443-1", "", "z"]])
    ds = sd.read_spin_dir(tmp_path)
    assert ds.ids == ["8485-1901", "7443-12703"] and ds.skipped == 1
    assert ds.columns == {"id": "PlateIFU", "target": "Lambda_Re"}
    assert ds.images[0].shape == (50, 60, 3) and ds.images[0][0, 0, 0] == 200
    x = sd.stack_resized(ds.images, sm.input_spec())          # mixed sizes, one resize path
    assert x.shape == (2, 80, 80, 3)
    _write_csv(tmp_path / "cat.csv", ["plateifu", "lambda_R"], [["9999-1", "0.3"]])
    with pytest.raises(StampflowError, match="no image 9999-1"):
        sd.read_spin_dir(tmp_path)
    _write_csv(tmp_path / "cat.csv", ["plateifu", "ellipticity"], [["8485-1901", "0.3"]])
    with pytest.raises(StampflowError, match="no lambda_R column"):
        sd.read_spin_dir(tmp_path)
    _write_csv(tmp_path / "second.csv", ["plateifu", "lambda_R"], [["8485-1901", "0.3"]])
    with pytest.raises(StampflowError, match="several CSV"):
        sd.read_spin_dir(tmp_path)
    assert len(sd.read_spin_dir(tmp_path, catalogue="second.csv")) == 1
    with pytest.raises(StampflowError, match="does not exist"):
        sd.read_spin_dir(tmp_path / "missing")


def test_mock_lambda_follows_morphology():
    rng = np.random.default_rng(0)
    p = mocks.SpinMockParams(lambda_scatter=0.0)
    assert mocks.mock_lambda_r(0.0, 1.0, rng, p) == pytest.approx(0.70)    # edge-on pure disc
    assert mocks.mock_lambda_r(1.0, 1.0, rng, p) == pytest.approx(0.08)    # spheroid
    assert mocks.mock_lambda_r(0.0, 0.0, rng, p) == pytest.approx(0.14)    # face-on disc
    gals = [mocks.mock_galaxy(rng) for _ in range(400)]
    lam = np.array([g["lambda_R"] for g in gals])
    bt = np.array([g["bulge_fraction"] for g in gals])
    ell = np.array([g["disc_ellipticity"] for g in gals])
    assert np.corrcoef(lam, bt)[0, 1] < -0.5 and np.corrcoef(lam, ell)[0, 1] > 0.2


def test_options_are_typed_and_checked(mock_dir):
    default = FAMILY.parse({})
    assert (default.fractions, default.arch, default.patience, default.width) == ((0.7, 0.15, 0.15), "bundled", 10,
                                                                                  None)
    o = FAMILY.parse({"arch": "seed", "first_stride": "2", "conv_dropout": "0.1", "head": "gap"})
    assert (o.arch, o.first_stride, o.conv_dropout, o.head) == ("seed", 2, 0.1, "gap")
    for bad in ({"arch": "resnet"}, {"head": "dense"}, {"first_stride": "3"}, {"width": "0"}, {"bogus": "1"}):
        with pytest.raises(StampflowError, match="^--set "):
            FAMILY.parse(bad)
    with pytest.raises(StampflowError, match="unknown evaluate option"):
        FAMILY.parse_evaluate({"arch": "seed"})
    assert [a.name for a in FAMILY.archives] == ["sdss-spin"]
    with pytest.raises(StampflowError, match="unknown replay option"):
        next(archive.iter_spin_cutouts(mock_dir, colour="red"))


def test_model_architecture():
    seed = sm.build_model()
    assert seed.count_params() == sm.SEED_PARAMETERS     # the sdss_CNN README's 5,994,145
    assert seed.get_layer("flatten").output.shape[-1] == 43200
    small = sm.build_model(**sm.BUNDLED_CONFIG)
    assert tuple(small.inputs[0].shape) == (None, 80, 80, 3) and tuple(small.outputs[0].shape) == (None, 1)
    assert small.count_params() < 200_000
    spec = sm.input_spec()
    assert spec.channels == ("i", "r", "g") and spec.geometry == "resize" and spec.pixel_scale is None
    assert sm.PREPROCESS["scale"] == pytest.approx(1 / 255)
    with pytest.raises(ValueError):
        sm.build_model(head="dense")


def test_train_evaluate_and_replay(mock_dir, tmp_path):
    from models.registry import Registry
    from training.family import TrainOptions
    from training.spin.evaluate import evaluate
    from training.spin.train import train

    res = train(TrainOptions(data=mock_dir, epochs=1, batch_size=8, out_root=tmp_path, seed=1),
                FAMILY.parse({"quiet": "yes", "width": "0.25"}))
    assert res["trained_on"] == "mock" and res["epochs_run"] == 1
    info = Registry([tmp_path]).resolve(res["artifact"])
    meta = info.metadata
    assert meta["task"] == "regression" and meta["classes"] == ["lambda_R"]
    assert meta["preprocess"]["scale"] == pytest.approx(1 / 255) and meta["input_spec"]["geometry"] == "resize"
    assert meta["training"]["architecture"]["width"] == 0.25 and meta["training_data"]["mock"]["n"] == 40
    counts = meta["split"]["counts"]   # 15% of each lambda_R quintile (8 stamps) rounds to 1
    assert counts == {"train": 30, "validation": 5, "test": 5} and res["test"]["n"] == 5
    assert (Path(res["artifact"]) / "scatter.png").is_file()
    ev = evaluate(info, mock_dir, FAMILY.parse_evaluate({"part": "test"}))
    assert ev["n"] == 5 and ev["mse"] == pytest.approx(res["test"]["mse"], rel=1e-4)

    cutouts = list(archive.iter_spin_cutouts(mock_dir, limit="3"))
    ds = sd.read_spin_dir(mock_dir)
    assert [c.truth_values["lambda_R"] for c in cutouts] == pytest.approx(list(ds.targets[:3]))
    c = cutouts[0]
    assert c.survey == "SDSS" and c.bands == ["i", "r", "g"] and c.pixel_scale is None
    np.testing.assert_array_equal(c.images["i"], ds.images[0][:, :, 0].astype(np.float32))
    np.testing.assert_array_equal(c.images["g"], ds.images[0][:, :, 2].astype(np.float32))
    # replayed as a packet, decoded and routed like the worker does, it scores as in evaluation
    from models.cnn import KerasCNN
    from tests.cutouts import served_batch

    clf = KerasCNN.load(info)
    batch = served_batch(clf, cutouts)
    served = clf.predict_batch(batch).probabilities[:, 0]
    direct = clf.predict_batch(sd.stack_resized(ds.images[:3], clf.input_spec)).probabilities[:, 0]
    np.testing.assert_allclose(served, direct, rtol=1e-4, atol=1e-5)
