"""DeepMerge: HLSP readers and mock writers (format, labels vs the real metadata), model, train/evaluate, replay."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from schemas.errors import StampflowError
from training.deepmerge import FAMILY, archive, hlsp, mocks
from training.deepmerge import network as dm

SLICE = slice(8100, 8140)  # 20 mergers then 20 non-mergers of the published row order


@pytest.fixture(scope="module")
def meta_dir(data_dir) -> Path:
    return data_dir / "deepmerge_metadata"


@pytest.fixture(scope="module")
def mock_dir(tmp_path_factory, meta_dir) -> Path:
    """Mocks written with a slice of the real label vector and the real merger stages, both formats."""
    out = tmp_path_factory.mktemp("deepmerge")
    labels = hlsp.real_label_vector(meta_dir)[SLICE]
    stages = hlsp.merger_stages(meta_dir)[SLICE]
    mocks.write_mock_hlsp(out, labels=labels, n_filters=2, seed=7, stages=stages)
    return out


def test_hlsp_names_round_trip():
    assert hlsp.hlsp_filename(2, "pristine") == \
        "hlsp_deepmerge_hst_acs-wfc3_illustris-z2_f814w-f160w_v1_sim-pristine.fits"
    assert hlsp.hlsp_filename(3, "noisy") == \
        "hlsp_deepmerge_hst-jwst_acs-wfc3-nircam_illustris-z2_f814w-f160w-f356w_v1_sim-noisy.fits"
    assert hlsp.hlsp_filename(2, "noisy", "x").endswith("_v1_sim-noisy-x.npy")
    assert hlsp.hlsp_filename(2, "noisy", "y").endswith("_v1_sim-labels-y.npy")
    info = hlsp.parse_hlsp_name(hlsp.hlsp_filename(3, "noisy", "x"))
    assert info["filters"] == ("F814W", "F160W", "F356W") and info["variant"] == "noisy" and info["kind"] == "x"
    assert hlsp.parse_hlsp_name("galaxies.fits") is None
    with pytest.raises(ValueError):
        hlsp.hlsp_filename(4, "pristine")


def test_real_metadata_structure_and_label_mapping(meta_dir):
    meta = hlsp.load_label_metadata(meta_dir)
    assert meta["subsamples_y"].shape == (15426, 3) and meta["subsamples_y"].dtype == np.int64
    y = hlsp.real_label_vector(meta_dir)
    labels = hlsp.labels_to_int(y, "real")
    assert {dm.CLASSES[1]: int(labels.sum()), dm.CLASSES[0]: int((labels == 0).sum())} == hlsp.REAL_COUNTS
    stages = hlsp.merger_stages(meta_dir)
    assert (stages == "post").sum() == 6020 and (stages == "pre").sum() == 2100
    assert ((stages == "none") == (labels == 0)).all()
    # the published row order: 1,624 merger stamps, then 4 flipped/rotated copies of them, then the non-mergers
    ids = hlsp.subhalo_groups(meta_dir)
    for k in range(1, 5):
        assert (ids[:1624] == ids[k * 1624:(k + 1) * 1624]).all()
    assert labels[:8120].all() and not labels[8120:].any()
    assert not set(ids[labels == 1]) & set(ids[labels == 0])  # a subhalo is never both


def test_mock_files_match_published_layout_and_round_trip_real_labels(mock_dir, meta_dir):
    from astropy.io import fits

    real = hlsp.real_label_vector(meta_dir)[SLICE]
    fits_path = mock_dir / hlsp.hlsp_filename(2, "pristine")
    with fits.open(fits_path) as hdul:
        assert len(hdul) == 2 and hdul[0].header["BITPIX"] == -64
        assert hdul[0].data.shape == (40, 2, 75, 75)
        assert hdul[1].header["EXTNAME"] == "MergerLabels" and hdul[1].columns.names == [hlsp.LABEL_COLUMN]
        assert hdul[1].columns[0].format == "D"
        np.testing.assert_array_equal(hdul[1].data[hlsp.LABEL_COLUMN], real)
    y_npy = np.load(mock_dir / hlsp.hlsp_filename(2, "pristine", "y"), allow_pickle=False)
    assert y_npy.dtype == np.float64
    np.testing.assert_array_equal(y_npy, real)
    x_npy = np.load(mock_dir / hlsp.hlsp_filename(2, "pristine", "x"), allow_pickle=False)
    assert x_npy.dtype == np.float64 and x_npy.shape == (40, 2, 75, 75)

    a = hlsp.read_hlsp(mock_dir, variant="pristine", fmt="fits")
    b = hlsp.read_hlsp(mock_dir, variant="pristine", fmt="npy")
    assert a.fmt == "fits" and b.fmt == "npy" and a.mock and a.variant == "pristine"
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    assert a.filters == ("F814W", "F160W") and a.class_names[0] == "merger" and a.class_names[-1] == "non-merger"
    chk = hlsp.check_labels_against_metadata(a.labels, meta_dir, rows=SLICE)
    assert chk["agree"] and chk["merger_fraction_file"] == pytest.approx(0.5)
    # the same scenes, plus sky noise at the configured level
    noisy = hlsp.read_hlsp(mock_dir, variant="noisy", fmt="fits")
    diff = np.asarray(noisy.images) - np.asarray(a.images)
    sig = dict(mocks.MockParams().noise_sigma)
    assert np.std(diff[:, 0]) == pytest.approx(sig["F814W"], rel=0.05)
    assert np.std(diff[:, 1]) == pytest.approx(sig["F160W"], rel=0.05)
    nhwc = a.nhwc()
    assert nhwc.shape == (40, 75, 75, 2) and nhwc.dtype == np.float32


def test_mock_scenes_follow_their_labels(mock_dir):
    import json

    desc = json.loads((mock_dir / "mock_description.json").read_text())
    assert desc["counts"]["merger"] == 20 and desc["counts"]["non-merger"] == 20
    rng = np.random.default_rng(0)
    for _ in range(30):
        s = mocks.mock_scene(rng, merger=False)
        assert s["label"] == 0 and not any(c["kind"] in ("tail", "shell") for c in s["components"])
        m = mocks.mock_scene(rng, merger=True)
        kinds = [c["kind"] for c in m["components"]]
        assert m["label"] == 1 and ("tail" in kinds or "shell" in kinds or kinds.count("sersic") >= 2)
    labels = mocks.mock_labels(1000, rng)
    assert labels.mean() == pytest.approx(hlsp.REAL_MERGER_FRACTION, abs=1e-3)


def test_reader_errors(tmp_path, mock_dir):
    with pytest.raises(StampflowError, match="does not exist"):
        hlsp.read_hlsp(tmp_path / "nothing.fits")
    with pytest.raises(StampflowError, match="several"):
        hlsp.read_hlsp(mock_dir)  # pristine and noisy both present
    x = tmp_path / hlsp.hlsp_filename(2, "pristine", "x")
    np.save(x, np.zeros((3, 2, 75, 75)))
    np.save(tmp_path / hlsp.hlsp_filename(2, "pristine", "y"), np.array([0.0, 1.0, 2.0]))
    with pytest.raises(StampflowError, match="0 \\(non-merger\\) or 1"):
        hlsp.read_hlsp(x)
    np.save(tmp_path / hlsp.hlsp_filename(2, "pristine", "y"), np.array([0.0, 1.0]))
    with pytest.raises(StampflowError, match="3 images but"):
        hlsp.read_hlsp(x)
    np.save(x, np.zeros((2, 2, 64, 64)))
    with pytest.raises(StampflowError, match="expected \\(N, filters, 75, 75\\)"):
        hlsp.read_hlsp(x)


def test_options_are_typed_and_checked(mock_dir):
    default = FAMILY.parse({})
    assert (default.fractions, default.split, default.dropout, default.patience) == ((0.7, 0.1, 0.2), "stratified",
                                                                                      0.2, 8)
    o = FAMILY.parse({"fractions": "0.6,0.2,0.2", "split": "subhalo", "max_images": "40", "variant": "noisy"})
    assert (o.fractions, o.split, o.max_images, o.variant) == ((0.6, 0.2, 0.2), "subhalo", 40, "noisy")
    for bad in ({"split": "random"}, {"fractions": "0.5,0.5"}, {"variant": "blurry"}, {"patience": "x"},
                {"bogus": "1"}):
        with pytest.raises(StampflowError, match="^--set "):
            FAMILY.parse(bad)
    with pytest.raises(StampflowError, match="unknown evaluate option"):
        FAMILY.parse_evaluate({"dropout": "0.5"})       # a training option means nothing to evaluate
    assert [a.name for a in FAMILY.archives] == ["deepmerge"]
    with pytest.raises(StampflowError, match="unknown replay option"):
        next(archive.iter_deepmerge_cutouts(mock_dir, colour="red"))


def test_model_architecture():
    m2 = dm.build_model(2)
    assert tuple(m2.inputs[0].shape) == (None, 75, 75, 2) and tuple(m2.outputs[0].shape) == (None, 1)
    # the notebook's 174,801 minus its BatchNorm-over-width parameters plus BatchNorm over channels
    assert m2.count_params() == 174801 - 4 * (75 + 37 + 18) + 4 * (8 + 16 + 32)
    m3 = dm.build_model(3, variant="noisy", dense_activation="softmax")
    assert tuple(m3.inputs[0].shape) == (None, 75, 75, 3) and m3.name == "deepmerge_noisy"
    assert m3.get_layer("dense1").activation.__name__ == "softmax"
    spec = dm.input_spec(3)
    assert spec.channels == ("F814W", "F160W", "F356W") and spec.geometry == "crop" and spec.size == 75
    assert spec.surveys == ("HST",) and spec.pixel_scale == dm.PIXEL_SCALE
    with pytest.raises(ValueError):
        dm.build_model(4)


def test_metrics_and_splits():
    from training.augment import dihedral_augmentation
    from training.deepmerge.metrics import binary_report, roc_auc
    from training.deepmerge.prepare import group_split

    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    rep = binary_report(y, np.array([0.1, 0.6, 0.7, 0.2]))
    assert rep["accuracy"] == 0.5 and rep["precision"] == 0.5 and rep["recall"] == 0.5
    assert rep["confusion_matrix"]["matrix"] == [[1, 1], [1, 1]]
    groups = np.repeat(np.arange(20), 5)
    labels = (groups % 2).astype(np.int8)
    parts = group_split(labels, groups, (0.6, 0.2, 0.2), seed=0)
    assert sum(len(p) for p in parts) == 100
    assert all(not set(groups[a]) & set(groups[b]) for i, a in enumerate(parts) for b in parts[i + 1:])
    aug = dihedral_augmentation(seed=1)
    x = np.arange(2 * 5 * 5 * 2, dtype=np.float32).reshape(2, 5, 5, 2)
    out = np.asarray(aug(x))
    assert out.shape == x.shape
    for i in range(2):
        np.testing.assert_array_equal(np.sort(out[i].ravel()), np.sort(x[i].ravel()))


def test_train_evaluate_and_replay(mock_dir, tmp_path):
    from models.cnn import KerasCNN
    from models.registry import Registry
    from training.deepmerge.evaluate import evaluate
    from training.deepmerge.train import train
    from training.family import TrainOptions

    res = train(TrainOptions(data=mock_dir, epochs=1, batch_size=16, out_root=tmp_path, seed=3),
                FAMILY.parse({"variant": "noisy", "format": "fits", "quiet": "1"}))
    assert res["name"] == "deepmerge-noisy" and res["trained_on"] == "mock" and res["epochs_run"] == 1
    assert res["inference_images_per_s"] > 0 and res["test"]["n"] == 8
    info = Registry([tmp_path]).resolve(res["artifact"])
    meta = info.metadata
    assert meta["task"] == "binary" and meta["classes"] == ["non-merger", "merger"] and meta["variant"] == "noisy"
    assert meta["training_data"]["mock"]["params"]["pixel_scale"] == dm.PIXEL_SCALE
    assert meta["split"]["counts"]["test"]["n"] == 8 and meta["input_spec"]["channels"] == ["F814W", "F160W"]
    for png in ("training_curves.png", "confusion_matrix.png", "roc.png"):
        assert (Path(res["artifact"]) / png).is_file()
    clf = KerasCNN.load(info)
    assert clf.input_spec.channels == ("F814W", "F160W")
    ev = evaluate(info, mock_dir, FAMILY.parse_evaluate({"variant": "noisy", "format": "npy", "part": "test"}))
    assert ev["n"] == 8 and ev["accuracy"] == pytest.approx(res["test"]["accuracy"])
    assert ev["roc_auc"] == pytest.approx(res["test"]["roc_auc"], nan_ok=True)

    cutouts = list(archive.iter_deepmerge_cutouts(mock_dir, variant="pristine", format="fits", start="18", limit="4"))
    assert [c.truth_label for c in cutouts] == ["merger", "merger", "non-merger", "non-merger"]
    c = cutouts[0]
    assert c.survey == "HST" and c.bands == ["F814W", "F160W"] and c.pixel_scale == dm.PIXEL_SCALE
    assert c.images["F160W"].shape == (75, 75) and c.dataset == "deepmerge-pristine-mock"
    # replayed as a packet, decoded and routed like the worker does, it scores as in evaluation
    from tests.cutouts import served_batch

    noisy = list(archive.iter_deepmerge_cutouts(mock_dir, variant="noisy", format="fits", start="18", limit="4"))
    batch = served_batch(clf, noisy)
    served = clf.predict_batch(batch).probabilities[:, 1]
    from training.cnn import predict_array
    from training.deepmerge.prepare import prepared_inputs

    data = hlsp.read_hlsp(mock_dir, variant="noisy", fmt="fits")
    direct = predict_array(clf.model, prepared_inputs(data, np.arange(18, 22)))[:, 0]
    np.testing.assert_allclose(served, direct, rtol=1e-4, atol=1e-5)
