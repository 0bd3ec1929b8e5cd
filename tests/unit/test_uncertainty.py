"""Calibrated uncertainty and the out-of-distribution rule (issue 10 §2): the fits, the serving path, the refusals.

The fits are checked on synthetic sets built to need them (an over-confident classifier, a regression whose
Monte-Carlo spread is on the wrong scale); the serving path on small Keras networks written as real artifacts;
the OOD rule on real radio stamps in `test_uncertainty_radio.py`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.base import ModelInfo
from models.cnn import (KerasCNN, compile_predict, compile_serving, entropy, outputs_to_prediction,
                        temperature_scale, unit_rows)
from models.registry import BUNDLED_ROOT, Registry, read_metadata
from schemas.errors import StampflowError
from training.calibration import expected_calibration_error
from training.uncertainty import attach_uncertainty, release_with_uncertainty
from training.uncertainty_fit import (ONE_SIGMA, calibrated_std, coverage, fit_std_calibration, fit_temperature,
                                      knn_reference)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _overconfident(n: int, seed: int, k: int = 4, sharpen: float = 3.0):
    """Labels drawn from softmax(z); the "network" reports softmax(sharpen * z): over-confident by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.2, (n, k))
    true = np.array([rng.choice(k, p=p) for p in _softmax(z)])
    return _softmax(sharpen * z).astype(np.float32), true


def test_temperature_scaling_lowers_ece_of_an_overconfident_classifier():
    fit_p, fit_y = _overconfident(3000, 0)
    test_p, test_y = _overconfident(3000, 1)
    t = fit_temperature(fit_p, fit_y, "classification")
    assert 2.6 < t < 3.4  # the sharpening it undoes
    before = expected_calibration_error(test_p, test_y)
    after = expected_calibration_error(temperature_scale(test_p, "classification", t), test_y)
    assert before > 0.1 and after < 0.03 and after < before / 4


def test_binary_temperature_and_argmax_kept():
    rng = np.random.default_rng(2)
    logit = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-logit))).astype(int)
    p = (1 / (1 + np.exp(-3 * logit)))[:, None].astype(np.float32)
    t = fit_temperature(p, y, "binary")
    assert 2.5 < t < 3.5
    scaled = temperature_scale(p, "binary", t)
    assert np.array_equal(scaled[:, 0] > 0.5, p[:, 0] > 0.5)
    probs = np.stack([1 - scaled[:, 0], scaled[:, 0]], axis=1)
    assert expected_calibration_error(probs, y) < expected_calibration_error(np.hstack([1 - p, p]), y) / 3
    p4, _ = _overconfident(50, 3)
    assert np.allclose(temperature_scale(p4, "classification", 1.0), p4, atol=1e-6)
    assert np.array_equal(temperature_scale(p4, "classification", 5.0).argmax(1), p4.argmax(1))


def test_std_calibration_reaches_68_percent_coverage():
    rng = np.random.default_rng(4)

    def draw(n):
        mc = rng.uniform(0.01, 0.1, n)            # the network's own spread: right shape, wrong scale, no floor
        sigma = np.sqrt((3.0 * mc) ** 2 + 0.05 ** 2)
        mean = rng.normal(0.3, 0.2, n)
        return mean[:, None], mc[:, None], (mean + rng.normal(0, sigma))[:, None]

    m, s, y = draw(2000)
    scale, floor = fit_std_calibration(m, s, y)
    assert abs(scale[0] - 3.0) < 0.5 and abs(floor[0] - 0.05) < 0.015
    tm, ts, ty = draw(2000)
    assert coverage(tm, ts, ty) < 0.3
    assert abs(coverage(tm, calibrated_std(ts, scale, floor), ty) - ONE_SIGMA) < 0.03


def _knn_oracle(features: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """The rule in plain numpy: squared distance of the normalised row to its k-th nearest reference row."""
    d2 = ((unit_rows(features)[:, None, :] - reference[None].astype(np.float64)) ** 2).sum(axis=2)
    return np.sort(d2, axis=1)[:, k - 1]


def test_knn_score_in_the_graph_matches_numpy_and_flags_the_shifted_cluster():
    import keras

    inp = keras.Input((8,))
    feat = keras.layers.Dense(8, use_bias=False, kernel_initializer="identity", name="feat")(inp)
    model = keras.Model(inp, keras.layers.Dense(1, name="out")(feat))
    rng = np.random.default_rng(5)
    ref = knn_reference(rng.normal(0, 1, (500, 8)) + 3.0, 400, 0)
    assert ref.shape == (400, 8) and np.allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-5)
    score = compile_serving(model, (8,), feature_layer="feat", ood_reference=ref, ood_k=5)
    inside, outside = (rng.normal(0, 1, (300, 8)).astype(np.float32) + c for c in (3.0, -3.0))
    s_in, s_out = (score(x)["ood_score"].reshape(-1) for x in (inside, outside))
    assert np.allclose(s_in, _knn_oracle(inside, ref, 5), atol=1e-5)
    threshold = np.quantile(s_in, 0.99)
    assert np.mean(s_out > threshold) > 0.95


# ------------------------------------------------------------------- real Keras networks as artifacts


def _tiny_artifact(root: Path, task: str, name: str = "tiny") -> Path:
    """A small CNN with BatchNorm in the trunk and Dropout in the dense head, saved as a servable artifact."""
    import keras

    keras.utils.set_random_seed(0)
    n_out = {"regression": 1, "binary": 1}.get(task, 3)
    act = {"regression": None, "binary": "sigmoid"}.get(task, "softmax")
    inp = keras.Input((16, 16, 1), name="stamp")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu", name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(16, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(0.3, name="drop")(x)
    out = keras.layers.Dense(n_out, activation=act, name="out")(x)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn")  # non-trivial running statistics: training-mode BN would change the outputs
    bn.set_weights([w + 0.5 * i for i, w in enumerate(bn.get_weights())])
    path = root / name / "1.0.0"
    path.mkdir(parents=True)
    keras.saving.save_model(model, path / "model.keras")
    classes = {"regression": ["target"], "binary": ["no", "yes"]}.get(task, ["a", "b", "c"])
    meta = {"name": name, "version": "1.0.0", "family": "test", "task": task, "classes": classes,
            "input_spec": {"survey": ["TEST"], "stamp_kinds": ["science"], "size": 16, "pixel_scale": None,
                           "channels": ["x"], "geometry": "resize"},
            "preprocess": {"scale": None, "clip_sigma": None, "normalise": "raw"}, "weights": "model.keras",
            "training_data": {}, "metrics": {}, "created": "2026-11-29T00:00:00+00:00", "code_version": "test"}
    (path / "metadata.json").write_text(json.dumps(meta))
    return path


def _load(path: Path) -> KerasCNN:
    meta = read_metadata(path)
    return KerasCNN.load(ModelInfo(meta["name"], meta["version"], meta["family"], path, meta))


@pytest.fixture(scope="module")
def stamps():
    rng = np.random.default_rng(6)
    return rng.normal(0, 1, (900, 16, 16, 1)).astype(np.float32)


def test_regression_block_mc_dropout_is_calibrated_reproducible_and_keeps_batch_norm(tmp_path, stamps):
    path = _tiny_artifact(tmp_path, "regression")
    before = _load(path)
    point = before.predict_batch(stamps).probabilities
    served = compile_predict(before.model, (16, 16, 1))(stamps)
    assert np.allclose(point, served) and np.all(before.predict_batch(stamps).uncertainty == 0)
    # the truth scatters around the network by an amount that grows with its own Monte-Carlo spread
    from models.cnn import compile_serving

    mc = compile_serving(before.model, (16, 16, 1), mc_from="drop", mc_samples=30, mc_seed=0)(stamps)["mc_std"]
    rng = np.random.default_rng(7)
    truth = point + rng.normal(0, 1, point.shape) * np.sqrt((2.0 * mc) ** 2 + 0.02 ** 2)
    out = attach_uncertainty(path, x_fit=stamps[:300], x_val=stamps[300:600], y_val=truth[300:600],
                             x_test=stamps[600:], y_test=truth[600:], say=lambda *_: None)
    cal = out["calibration"]
    assert cal["method"] == "mc_dropout" and cal["from_layer"] == "drop"
    assert abs(cal["coverage_68"]["test"] - ONE_SIGMA) < 0.08
    after = _load(path)
    a, b = after.predict_batch(stamps[600:]), after.predict_batch(stamps[600:])
    assert np.array_equal(a.uncertainty, b.uncertainty)            # fixed masks: a replay gives the same numbers
    assert np.allclose(a.probabilities, point[600:], atol=1e-6)    # point predictions unchanged (BN in inference)
    inside = np.abs(truth[600:, 0] - a.probabilities[:, 0]) <= a.uncertainty
    assert abs(inside.mean() - ONE_SIGMA) < 0.08
    assert (path / "reliability.png").stat().st_size > 0 and (path / "ood.npz").is_file()


def test_classifier_block_and_ood_flag_through_the_serving_class(tmp_path, stamps):
    path = _tiny_artifact(tmp_path, "classification")
    raw = _load(path).predict_batch(stamps)
    rng = np.random.default_rng(8)
    y = np.array([rng.choice(3, p=p) for p in _softmax(np.log(np.maximum(raw.probabilities, 1e-9)) / 3.0)])
    out = attach_uncertainty(path, x_fit=stamps[:300], x_val=stamps[300:600], y_val=y[300:600],
                             say=lambda *_: None)
    assert out["calibration"]["temperature"] > 1.5  # labels were drawn flatter than the network's outputs
    assert out["ood"]["rule"] == "knn_distance_above" and out["ood"]["feature_layer"] == "relu"
    clf = _load(path)
    pred = clf.predict_batch(stamps[600:])
    assert [pred.labels[i] for i in range(5)] == [raw.labels[600 + i] for i in range(5)]
    assert np.allclose(pred.uncertainty, 1 - pred.probabilities.max(axis=1))
    assert pred.out_of_distribution.mean() < 0.05
    shifted = clf.predict_batch(stamps[600:] * 0.05 + np.linspace(-3, 3, 16)[None, :, None, None])
    assert shifted.out_of_distribution.mean() > 0.9


def test_unknown_rule_or_method_is_one_clear_line(tmp_path, stamps):
    path = _tiny_artifact(tmp_path, "binary")
    attach_uncertainty(path, x_fit=stamps[:200], x_val=stamps[200:400], y_val=np.arange(200) % 2,
                       say=lambda *_: None)
    with pytest.raises(StampflowError, match="already has an uncertainty block"):
        attach_uncertainty(path, x_fit=stamps[:200], x_val=stamps[200:400], y_val=np.arange(200) % 2)
    meta = read_metadata(path)
    for key, field, value, message in [("ood", "rule", "energy_above", "unknown ood rule 'energy_above'"),
                                       ("calibration", "method", "isotonic", "unknown calibration method")]:
        bad = json.loads(json.dumps(meta))
        bad[key][field] = value
        (path / "metadata.json").write_text(json.dumps(bad))
        with pytest.raises(StampflowError, match=message) as err:
            _load(path)
        assert "\n" not in str(err.value)
    (path / "metadata.json").write_text(json.dumps(meta))
    _load(path)


def test_artifacts_without_the_block_serve_exactly_as_before(stamps):
    clf = Registry().load("deepmerge@1.0.0")
    assert clf.uncertainty is None
    x = np.random.default_rng(9).uniform(0, 1, (64, 75, 75, 2)).astype(np.float32)
    pred = clf.predict_batch(x)
    from models.preprocess import apply_recipe

    expected = outputs_to_prediction(compile_predict(clf.model, (75, 75, 2))(apply_recipe(x, clf.recipe)),
                                     "binary", clf.classes)
    assert np.allclose(pred.probabilities, expected.probabilities)
    assert np.allclose(pred.uncertainty, entropy(pred.probabilities)) and pred.out_of_distribution is None


def test_release_makes_a_new_version_and_never_touches_the_source(tmp_path, stamps):
    src = _tiny_artifact(tmp_path / "src", "classification")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    out = release_with_uncertainty(src, "1.1.0", out_root=tmp_path / "out", x_fit=stamps[:200],
                                   x_val=stamps[200:400], y_val=np.arange(200) % 3, say=lambda *_: None)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    meta = read_metadata(out)
    assert meta["version"] == "1.1.0" and meta["derived_from"]["model"] == "tiny@1.0.0"
    assert (out / "model.keras").read_bytes() == before["model.keras"]
    assert Registry([tmp_path / "out"]).resolve("tiny").version == "1.1.0"


@pytest.mark.parametrize("name", ["deepmerge", "deepmerge-noisy", "morphology-candels", "morphology-clash", "spin"])
def test_bundled_default_is_the_calibrated_version(name):
    info = Registry().resolve(name)
    meta = info.metadata
    assert meta["derived_from"]["model"] == f"{name}@1.0.0" and meta["trained_on"] == "mock"
    assert meta["ood"]["rule"] == "knn_distance_above" and meta["uncertainty"]
    src = BUNDLED_ROOT / name / "1.0.0" / "model.keras"
    assert (info.path / "model.keras").read_bytes() == src.read_bytes()
    if meta["task"] in ("classification", "binary"):
        ece = meta["calibration"]["ece_after"]["test"]
        assert ece <= max(meta["calibration"]["ece_before"]["test"], 0.03)
    else:
        assert abs(meta["calibration"]["coverage_68"]["test"] - ONE_SIGMA) < 0.1
    clf = Registry().load(name)
    spec = clf.input_spec
    pred = clf.predict_batch(np.zeros((2, spec.size, spec.size, spec.n_channels), np.float32))
    assert pred.out_of_distribution is not None and np.all(np.isfinite(pred.uncertainty))


def test_copying_an_artifact_dir_keeps_it_servable(tmp_path):
    """The block's arrays are found relative to the artifact, so a moved artifact still serves."""
    info = Registry().resolve("deepmerge")
    moved = tmp_path / "deepmerge" / info.version
    shutil.copytree(info.path, moved)
    assert _load(moved).uncertainty is not None


def test_training_hook_attaches_or_says_why_not(tmp_path, stamps):
    from training.uncertainty import MIN_VALIDATION, attach_after_training

    small = _tiny_artifact(tmp_path / "small", "binary")
    said: list[str] = []
    out = attach_after_training(small, x_fit=stamps[:50], x_val=stamps[50:60], y_val=np.arange(10) % 2,
                                say=said.append)
    assert out["attached"] is False and "uncertainty" not in read_metadata(small) and "skipped" in said[0]
    big = _tiny_artifact(tmp_path / "big", "binary")
    n = MIN_VALIDATION + 20
    out = attach_after_training(big, x_fit=stamps[:200], x_val=stamps[200:200 + n], y_val=np.arange(n) % 2,
                                x_test=stamps[300:400], y_test=np.arange(100) % 2, say=said.append)
    assert out["attached"] and out["method"] == "temperature" and "test" in out["ece_after"]
    assert read_metadata(big)["ood"]["flagged_share"]["test"] == out["ood_flagged_share"]["test"]
