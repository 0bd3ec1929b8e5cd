"""Star/galaxy MuyGPs model: committed artifact, serving predictions, GP internals, train() and evaluate()."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models.base import ModelInfo
from models.registry import BUNDLED_ROOT, REQUIRED_METADATA, Registry
from models.stargal import (CLASSES, GPPredictor, StarGalaxyGP, build_muygps, probabilities_from_means,
                            squared_distances)
from schemas.errors import StampflowError
from schemas.stamps import read_fits_file
from training.evaluation import wilson_interval
from training.family import TrainOptions
from training.stargal import FAMILY as STARGAL
from training.stargal.data import load_stargal_dir
from training.stargal.gp import GPClassifier, to_pm1
from training.stargal.options import StargalOptions
from training.stargal.train import train

ARTIFACT = BUNDLED_ROOT / "stargal" / "1.0.0"


@pytest.fixture(scope="module")
def cutouts(data_dir):
    return data_dir / "ztf_stargal" / "cutouts"


@pytest.fixture(scope="module")
def real(cutouts):
    images, labels, names, info = load_stargal_dir(cutouts, return_info=True)
    return images, labels, names, info


@pytest.fixture(scope="module")
def model() -> StarGalaxyGP:
    clf = Registry().load("stargal@1.0.0")
    assert isinstance(clf, StarGalaxyGP)
    return clf


@pytest.fixture(scope="module")
def unseen(real):
    """Real cutouts the committed model was not trained on (its hold-out part)."""
    images, labels, names, info = real
    with np.load(ARTIFACT / "weights.npz", allow_pickle=False) as z:
        trained = {bytes(h).hex() for h in z["train_file_sha256"]}
    keep = np.array([h not in trained for h in info.hashes])
    return images[keep], labels[keep]


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory, cutouts):
    """40 stars + 40 galaxies (+1 duplicate), so train()/evaluate() runs stay quick."""
    d = tmp_path_factory.mktemp("stargal_small")
    for kind in ("star", "galaxy"):
        files = sorted(cutouts.glob(f"{kind}_*.fits"), key=lambda p: int(p.stem.split("_")[1]))[:40]
        for f in files:
            shutil.copy(f, d / f.name)
    shutil.copy(files[0], d / "galaxy_4000.fits")  # a byte-identical duplicate
    return d


# ------------------------------------------------------------------------------------- committed artifact


def test_artifact_is_small_pickle_free_and_complete():
    files = {p.name for p in ARTIFACT.iterdir()}
    assert {"weights.npz", "metadata.json", "confusion_matrix.png", "normalisation_comparison.png"} <= files
    assert sum(p.stat().st_size for p in ARTIFACT.iterdir()) < 3_000_000
    with np.load(ARTIFACT / "weights.npz", allow_pickle=False) as z:
        for key in z.files:
            assert z[key].dtype != object, key
    with zipfile.ZipFile(ARTIFACT / "weights.npz") as zf:
        assert all(name.endswith(".npy") for name in zf.namelist())
    meta = json.loads((ARTIFACT / "metadata.json").read_text())
    assert all(k in meta for k in REQUIRED_METADATA)
    assert meta["name"] == "stargal" and meta["family"] == "stargal" and meta["trained_on"] == "real"
    assert meta["classes"] == list(CLASSES)
    assert meta["training_data"]["n_duplicates_dropped"] == 4
    assert meta["split"]["counts"]["train"] + meta["split"]["counts"]["holdout"] == 1195
    assert len(meta["selection"]["table"]) == 15 and sum(r.get("chosen", False) for r in meta["selection"]["table"]) == 1
    lo, hi = meta["metrics"]["holdout_accuracy_ci95"]
    assert 0.9 < lo <= meta["metrics"]["holdout_accuracy"] <= hi <= 1.0


def test_model_contract(model):
    assert model.family == "stargal" and model.classes == ("star", "galaxy")
    spec = model.input_spec
    assert spec.survey == "ZTF" and spec.size == 20 and spec.stamp_kinds[0].value == "science"


def test_predicts_real_unseen_cutouts_well(model, unseen):
    images, labels = unseen
    assert 200 <= len(images) <= 260
    pred = model.predict_batch(images[..., None])
    acc = np.mean(np.array(pred.labels) == labels)
    assert acc > 0.93, acc
    p = pred.probabilities
    assert p.shape == (len(images), 2) and p.dtype == np.float32
    assert np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(pred.uncertainty >= 0) and np.isfinite(pred.uncertainty).all()
    # Labels agree with the larger probability, and confident predictions are mostly right.
    assert [model.classes[i] for i in np.argmax(p, axis=1)] == pred.labels
    confident = p.max(axis=1) > 0.9
    assert confident.sum() > len(images) / 2
    assert np.mean(np.array(pred.labels)[confident] == labels[confident]) > 0.97


def test_training_points_have_lower_variance_than_unseen(model, real, unseen):
    images, *_ = real
    train_feats = model.predictor.train_features
    # Training stamps sit on a training point: posterior variance ~ noise; unseen ones are further away.
    own = model.predictor.posterior(train_feats[:100].astype(np.float64))[1]
    other = model.predict_batch(unseen[0][:100, ..., None]).uncertainty
    assert np.median(own) < np.median(other)


def test_empty_single_and_chunked_batches(model, unseen):
    images = unseen[0][..., None]
    empty = model.predict_batch(np.zeros((0, 20, 20, 1), np.float32))
    assert empty.labels == [] and empty.probabilities.shape == (0, 2) and empty.uncertainty.shape == (0,)
    full = model.predict_batch(images[:50])
    one = model.predict_batch(images[7:8])
    assert one.labels == [full.labels[7]]
    np.testing.assert_allclose(one.probabilities[0], full.probabilities[7], atol=1e-6)
    old = model.predictor.chunk
    try:
        model.predictor.chunk = 8
        chunked = model.predict_batch(images[:50])
    finally:
        model.predictor.chunk = old
    np.testing.assert_allclose(chunked.probabilities, full.probabilities, atol=1e-6)
    np.testing.assert_allclose(chunked.uncertainty, full.uncertainty, rtol=1e-6)
    # 3-D input (no channel axis) is accepted; wrong geometry is not.
    np.testing.assert_allclose(model.predict_batch(images[:5, ..., 0]).probabilities, full.probabilities[:5], atol=1e-6)
    with pytest.raises(ValueError):
        model.predict_batch(np.zeros((2, 21, 21, 1), np.float32))
    with pytest.raises(ValueError):
        model.predict_batch(np.zeros((2, 20, 20, 2), np.float32))


def test_load_reads_only_plain_arrays(tmp_path):
    """A weights file that needs pickle must be refused, not unpickled."""
    art = tmp_path / "stargal" / "9.9.9"
    shutil.copytree(ARTIFACT, art)
    with np.load(art / "weights.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["hyperparameter_names"] = np.array(list(arrays["hyperparameter_names"]), dtype=object)
    np.savez(art / "weights.npz", **arrays)
    meta = json.loads((art / "metadata.json").read_text())
    with pytest.raises(StampflowError):
        StarGalaxyGP.load(ModelInfo("stargal", "9.9.9", "stargal", art, meta))


# ------------------------------------------------------------------------------------------ GP internals


def test_gram_tensors_and_posterior_match_muygpys():
    """Our Gram-matrix neighbourhoods + kernel lookup equal MuyGPyS's own tensors and posterior."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    t = to_pm1(np.eye(2)[rng.integers(0, 2, 120)])
    q = rng.normal(size=(9, 6))
    muygps = build_muygps("matern", 1.3, 1e-3, 0.8, 0.37)  # a non-unit sigma^2, as trained models have
    pred = GPPredictor(x, t, 10, muygps, "l2")
    nn, cross, pair = pred.neighbourhoods(q)
    d = np.sqrt(((q[:, None, :] - x[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(nn, np.argsort(d, axis=1)[:, :10])
    m_cross, m_pair, m_targets = muygps.make_predict_tensors(np.arange(9), nn, q, x, t)
    np.testing.assert_allclose(cross, m_cross, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pair, m_pair, rtol=1e-9, atol=1e-9)
    kin, kcross = muygps.kernel(m_pair), muygps.kernel(m_cross)
    mean_ref = muygps.posterior_mean(kin, kcross, m_targets)
    var_ref = muygps.posterior_variance(kin, kcross)
    mean, var = pred.posterior(q)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(var, np.maximum(var_ref, 0), rtol=1e-7, atol=1e-12)
    # Same answer without the precomputed training kernel.
    pred._train_kernel = None
    np.testing.assert_allclose(pred.posterior(q)[0], mean_ref, rtol=1e-7, atol=1e-9)
    # The in-place noise on K_in's diagonal is bit for bit MuyGPyS's K_in + noise * eye, and the input is used
    # as the batch's own scratch (a non-contiguous or read-only K_in goes through MuyGPyS's own perturb)
    ref = muygps.noise.perturb(kin)
    np.testing.assert_array_equal(pred._perturbed(kin.copy()), ref)
    ro = kin.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(pred._perturbed(ro), ref)
    # Leave-one-out exclusion never returns the excluded index.
    nn_loo, _, _ = pred.neighbourhoods(x[:5], exclude=np.arange(5))
    assert all(i not in row for i, row in enumerate(nn_loo))
    np.testing.assert_allclose(squared_distances(x[:3], x[:3]).diagonal(), 0.0, atol=1e-9)


def test_probabilities_from_means():
    p = probabilities_from_means(np.array([[-1.0, 1.0], [0.2, -0.2], [1.5, -1.5], [-2.0, -2.0]]))
    np.testing.assert_allclose(p, [[0, 1], [0.6, 0.4], [1, 0], [0.5, 0.5]])


def test_gp_classifier_fit_predict_separable():
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, size=(80, 3))
    b = rng.normal(4.0, 1.0, size=(80, 3))
    x = np.vstack([a, b])
    onehot = np.eye(2)[np.r_[np.zeros(80, int), np.ones(80, int)]]
    gp = GPClassifier(nn_count=15, batch_count=60, optimizer="lbfgsb", optimise_smoothness=False).fit(x, onehot)
    hp = gp.hyperparameters
    assert hp["length_scale"] > 0 and hp["noise"] > 0 and hp["scale"] > 0
    mean, var = gp.posterior(np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 4.0]]))
    assert np.argmax(mean[0]) == 0 and np.argmax(mean[1]) == 1
    assert np.all(var >= 0)


def test_wilson_interval():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


# ------------------------------------------------------------------------------------------- training data


def test_read_fits_file_native_float32(cutouts):
    img = read_fits_file(cutouts / "star_0.fits")
    assert img.shape == (20, 20) and img.dtype == np.float32 and img.dtype.isnative
    assert np.isfinite(img).all() and img.max() > img.min()


def test_load_stargal_dir_deduplicates_real_data(cutouts):
    images, labels, names, info = load_stargal_dir(cutouts, return_info=True)
    assert info.n_files == 1199
    assert info.n_duplicates == 4 and info.conflicting_labels == 0
    assert images.shape == (1195, 20, 20) and images.dtype == np.float32 and np.isfinite(images).all()
    assert (labels == "galaxy").sum() == 600 and (labels == "star").sum() == 595
    assert len(set(info.hashes)) == len(info.hashes) == len(names) == 1195
    # Every dropped file is byte-identical to the one kept, and only the kept one is returned.
    for dropped, kept in info.duplicates:
        assert (cutouts / dropped).read_bytes() == (cutouts / kept).read_bytes()
        assert dropped not in names and kept in names
    assert len(info.dataset_sha256()) == 64


def test_load_stargal_dir_small_and_errors(tmp_path, cutouts):
    for name in ("star_0.fits", "star_1.fits", "galaxy_0.fits"):
        shutil.copy(cutouts / name, tmp_path / name)
    shutil.copy(cutouts / "star_1.fits", tmp_path / "star_9.fits")  # a duplicate
    (tmp_path / "notes.txt").write_text("ignored")
    images, labels, names, info = load_stargal_dir(tmp_path, return_info=True)
    assert names == ["star_0.fits", "star_1.fits", "galaxy_0.fits"]
    assert list(labels) == ["star", "star", "galaxy"] and info.n_duplicates == 1
    np.testing.assert_array_equal(images[2], read_fits_file(cutouts / "galaxy_0.fits"))

    with pytest.raises(StampflowError, match="does not exist"):
        load_stargal_dir(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.fits").write_text("x")
    with pytest.raises(StampflowError, match="no star_"):
        load_stargal_dir(empty)


# ------------------------------------------------------------------------------------- train / evaluate


def test_tiny_train_produces_loadable_artifact(tmp_path, small_dir):
    out = tmp_path / "registry"
    result = train(TrainOptions(data=small_dir, out_root=out, seed=1),
                   STARGAL.parse({"normalisations": "l2,zscore", "pca_dims": "0,8", "folds": "2", "batch_count": "40",
                                  "nn_count": "10", "init_points": "2", "n_iter": "2", "quiet": "true"}))
    art = out / "stargal" / "1.0.0"
    assert result["artifact"] == str(art) and result["version"] == "1.0.0"
    assert {"weights.npz", "metadata.json", "confusion_matrix.png", "normalisation_comparison.png"} <= {
        p.name for p in art.iterdir()}
    meta = json.loads((art / "metadata.json").read_text())
    assert all(k in meta for k in REQUIRED_METADATA)
    assert meta["training_data"]["n_files"] == 81 and meta["training_data"]["n_duplicates_dropped"] == 1
    assert meta["training_data"]["class_counts"] == {"star": 40, "galaxy": 40}
    assert meta["split"]["counts"] == {"train": 64, "holdout": 16, "train_per_class": {"star": 32, "galaxy": 32},
                                       "holdout_per_class": {"star": 8, "galaxy": 8}}
    table = meta["selection"]["table"]
    assert [(r["normalisation"], r["dims"]) for r in table] == [("l2", 400), ("l2", 8), ("zscore", 400),
                                                                 ("zscore", 8)]
    assert all(0.0 <= r["val_accuracy"] <= 1.0 and r["fit_seconds"] > 0 for r in table)
    holdout = meta["metrics"]["holdout"]
    assert holdout["n"] == 16 and sum(map(sum, holdout["confusion_matrix"]["matrix"])) == 16
    assert holdout["accuracy"] >= 0.75  # 16 real stamps, trained on 64: still well above chance
    # The registry finds and loads it, without pickle, and it predicts.
    clf = Registry([out]).load("stargal@1.0.0")  # local roots win over the bundled artifacts of the same version
    assert isinstance(clf, StarGalaxyGP) and clf.version == "1.0.0" and Path(clf.info.path) == art
    images, *_ = load_stargal_dir(small_dir)
    assert len(clf.predict_batch(images[:4, ..., None]).labels) == 4
    # Same version again is refused; no version -> next one.
    with pytest.raises(StampflowError, match="already exists"):
        train(TrainOptions(data=small_dir, out_root=out, version="1.0.0"), StargalOptions(quiet=True))


def evaluate(model: str, data, pairs: dict[str, str] | None = None):
    """``stampflow evaluate MODEL --data DATA``: the registry resolves the model, its family evaluates it."""
    from training.families import evaluate as evaluate_model

    return evaluate_model(model, data, pairs or {})


def test_evaluate_structure_and_training_overlap(small_dir):
    res = evaluate("stargal@1.0.0", small_dir)
    assert res["model"] == "stargal@1.0.0" and res["n"] == 80
    assert res["data"]["n_duplicates_dropped"] == 1
    cm = res["confusion_matrix"]
    assert cm["labels"] == ["star", "galaxy"] and cm["rows"] == "true" and cm["columns"] == "predicted"
    assert np.array(cm["matrix"]).sum() == 80 and np.array(cm["matrix"]).sum(axis=1).tolist() == [40, 40]
    lo, hi = res["accuracy_ci95"]
    assert lo <= res["accuracy"] <= hi and res["accuracy"] > 0.9
    assert set(res["per_class"]) == {"star", "galaxy"} and res["per_class"]["star"]["support"] == 40
    # Most of these files were in the committed model's training part; the rest are scored separately.
    assert 0 < res["n_in_training_set"] < 80
    assert res["unseen"]["n"] == 80 - res["n_in_training_set"]
    json.dumps(res)  # JSON-able for the CLI


def test_bad_data_dir_raises(tmp_path):
    with pytest.raises(StampflowError):
        evaluate(str(ARTIFACT), tmp_path / "nope")
    with pytest.raises(StampflowError):
        train(TrainOptions(data=tmp_path, out_root=tmp_path / "out"), StargalOptions(quiet=True))
    with pytest.raises(StampflowError):
        evaluate("no-such-model", tmp_path)
