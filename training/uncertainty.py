"""Calibrated uncertainty and an out-of-distribution rule for a CNN artifact (issue 10, section 2).

`attach_uncertainty(artifact_dir, x_fit=, x_val=, y_val=)` adds to an artifact that is not yet released:

* ``calibration`` (metadata): classifiers get one temperature for their logits fitted on the validation part
  (ECE, 15 bins, before and after, in-sample and cross-fitted, and on a test part when given); regression and
  vote-fraction models get Monte-Carlo dropout over the network's dense head (fixed masks, so served numbers are
  reproducible; every BatchNormalization stays in inference mode), its spread calibrated per output as
  sigma^2 = scale^2 * mc_std^2 + floor^2 (`training.uncertainty_fit.fit_std_calibration`), and the share of
  held-out true values inside +/- sigma (target 0.68);
* ``ood`` (metadata) + ``ood.npz``: deep k-nearest-neighbours (Sun et al. 2022): the network's last convolutional
  feature map, averaged over a centre disc and the ring around it, L2-normalised; the score is the distance to
  the k-th nearest of up to 2,000 such rows from ``x_fit``, flagged above the 99th percentile of the same score
  on ``x_val``, which the reference does not hold;
* ``reliability.png``: the reliability diagram (classifiers) or observed-vs-nominal interval coverage
  (regression);
* ``uncertainty`` (metadata): what the served ``uncertainty`` field means for this model.

The artifact is then reloaded through the serving class and its served outputs are checked against the fit.
`release_with_uncertainty` makes a new version of a released artifact (same weights) and attaches the block to it:
a released artifact is never edited in place.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from models.base import ModelInfo
from models.cnn import (MC_HEAD_LAYERS, KerasCNN, compile_serving, head_chain, load_keras, served_prediction,
                        temperature_scale)
from models.preprocess import apply_recipe
from models.registry import read_metadata, serving_kind
from models.versioning import code_version
from schemas.errors import StampflowError
from training.calibration import ECE_BINS, ece_from_bins, reliability_bins
from training.uncertainty_fit import (ONE_SIGMA, calibrated_std, class_probabilities, coverage, cross_fitted,
                                      fit_std_calibration, fit_temperature, knn_reference, nll)

MC_SAMPLES = 30
OOD_QUANTILE = 0.99
OOD_K = 5            # k-th neighbour; chosen on radio-first 1.0.0 (docs/models.md): NVSS vs FR-DEEP FIRST
OOD_RINGS = 2        # centre / surroundings of the last feature map
OOD_REFERENCE_MAX = 2000
OOD_ARRAYS = "ood.npz"
PLOT = "reliability.png"
CLASSIFIERS = ("classification", "binary")

UNCERTAINTY_MEANING = {
    "classification": "1 - calibrated probability of the predicted class (0 to 1 - 1/K): the chance the label is "
                      "wrong, after temperature scaling",
    "binary": "1 - calibrated probability of the predicted class (0 to 0.5): the chance the label is wrong, after "
              "temperature scaling",
    "regression": "calibrated predictive standard deviation in the target's units (Monte-Carlo dropout spread, "
                  "rescaled on the validation part): the true value lies within +/- 1 of it about 68% of the time",
    "fractions": "calibrated predictive standard deviation of the predicted class's vote fraction (0 to ~0.5; "
                 "Monte-Carlo dropout spread, rescaled on the validation part): the true fraction lies within "
                 "+/- 1 of it about 68% of the time",
}


#: Layers whose output is a re-sampling or a regulariser of the map before them, not a new representation.
_NOT_FEATURES = ("MaxPooling2D", "AveragePooling2D", "Dropout", "SpatialDropout2D", "Flatten",
                 "GlobalAveragePooling2D", "GlobalMaxPooling2D", "InputLayer")


def feature_map_layer(model) -> str:
    """Name of the last layer producing a (N, H, W, C) feature map (the deepest convolutional representation:
    a Conv2D, its BatchNormalization or its Activation, not a pooling or dropout of it)."""
    for layer in reversed(model.layers):
        if type(layer).__name__ not in _NOT_FEATURES and len(layer.output.shape) == 4:
            return layer.name
    raise StampflowError("the network has no convolutional feature map; pass feature_layer= to attach_uncertainty")


def mc_head_start(model) -> str:
    """The first Dropout of the longest dense tail (Dense / Dropout / Activation chain) ending at the output:
    Monte-Carlo samples replay the network from there, so the convolutional trunk runs once."""
    layers = model.layers
    i = len(layers) - 1
    while i > 0 and type(layers[i]).__name__ in MC_HEAD_LAYERS and layers[i].input is layers[i - 1].output:
        i -= 1
    drops = [layer.name for layer in layers[i + 1:] if type(layer).__name__ == "Dropout"]
    if not drops:
        raise StampflowError("the network's dense head has no Dropout layer: Monte-Carlo dropout cannot sample it")
    head_chain(model, drops[0])
    return drops[0]


def _rows(probabilities: np.ndarray, true: np.ndarray) -> list[dict[str, Any]]:
    return reliability_bins(probabilities, true, ECE_BINS)


def _calibrate_classifier(task: str, val: dict, y_val: np.ndarray, test: dict | None, y_test, seed: int,
                          say: Callable, fixed: float | None = None, why: str | None = None) -> tuple[dict, dict]:
    """Temperature scaling fitted on the validation part; or, with ``fixed`` (and the reason ``why``), a
    temperature set by hand and only measured here, for a model whose parts disagree on the temperature."""
    y_val = np.asarray(y_val, dtype=int)
    raw = val["outputs"]
    t = fit_temperature(raw, y_val, task) if fixed is None else float(fixed)
    before = class_probabilities(raw, task)
    after = class_probabilities(temperature_scale(raw, task, t), task)
    held = after if fixed is not None else cross_fitted(
        len(y_val), seed, lambda idx: fit_temperature(raw[idx], y_val[idx], task),
        lambda tt, idx: class_probabilities(temperature_scale(raw[idx], task, tt), task))
    label = "validation, calibrated" + (" (cross-fitted)" if fixed is None else " (fixed temperature)")
    curves = {"validation, network": _rows(before, y_val), label: _rows(held, y_val)}
    meaning = ("probabilities = softmax(log p / T) (sigmoid(logit p / T) for binary), fitted by minimising the "
               "validation negative log-likelihood; argmax and so labels are unchanged")
    if fixed is not None:
        meaning = f"probabilities = softmax(log p / T) with T = {t:g} set by hand, not fitted: {why}"
    block: dict[str, Any] = {
        "method": "temperature", "temperature": t, "fitted": fixed is None,
        "meaning": meaning,
        "fitted_on": {"part": "validation" if fixed is None else "none (fixed; measured on validation)",
                      "n": int(len(y_val))}, "ece_bins": ECE_BINS,
        "ece_before": {"validation": ece_from_bins(curves["validation, network"])},
        "ece_after": {"validation_cross_fitted": ece_from_bins(curves[label]),
                      "validation_in_sample": ece_from_bins(_rows(after, y_val))},
        "nll_before": {"validation": nll(before, y_val)}, "nll_after": {"validation_in_sample": nll(after, y_val)},
        "cross_fitted": ("temperature fitted on one seeded half of the validation part, ECE measured on the other, "
                         f"and the other way round (seed {seed})") if fixed is None else
                        "not applicable: nothing is fitted, so every validation number is out of sample",
    }
    if test is not None:
        y_test = np.asarray(y_test, dtype=int)
        tb, ta = class_probabilities(test["outputs"], task), class_probabilities(
            temperature_scale(test["outputs"], task, t), task)
        curves["test, network"], curves["test, calibrated"] = _rows(tb, y_test), _rows(ta, y_test)
        block["ece_before"]["test"] = ece_from_bins(curves["test, network"])
        block["ece_after"]["test"] = ece_from_bins(curves["test, calibrated"])
        block["nll_before"]["test"], block["nll_after"]["test"] = nll(tb, y_test), nll(ta, y_test)
        block["fitted_on"]["test_n"] = int(len(y_test))
    say(f"temperature {t:.3f}: ECE validation {block['ece_before']['validation']:.4f} -> "
        f"{block['ece_after']['validation_cross_fitted']:.4f} ({'cross-fitted' if fixed is None else 'fixed'})"
        + (f", test {block['ece_before']['test']:.4f} -> {block['ece_after']['test']:.4f}" if test else ""))
    return block, curves


def _calibrate_regression(val: dict, y_val: np.ndarray, test: dict | None, y_test, *, mc_from: str, samples: int,
                          seed: int, say: Callable) -> tuple[dict, dict]:
    from scipy.stats import spearmanr

    mean, mc = val["outputs"].astype(np.float64), val["mc_std"].astype(np.float64)
    y = np.asarray(y_val, dtype=np.float64).reshape(mean.shape)
    scale, floor = fit_std_calibration(mean, mc, y)

    def held_std(params, idx):
        return calibrated_std(mc[idx], *params)

    held = cross_fitted(len(y), seed, lambda idx: fit_std_calibration(mean[idx], mc[idx], y[idx]), held_std)
    zs = np.linspace(0.05, 3.0, 60)

    def curve(m, s, t):
        from scipy.stats import norm

        return [{"nominal": float(2 * norm.cdf(z) - 1), "observed": coverage(m, s, t, z)} for z in zs]

    curves = {"validation, MC dropout spread": curve(mean, mc, y),
              "validation, calibrated (cross-fitted)": curve(mean, held, y)}
    block: dict[str, Any] = {
        "method": "mc_dropout", "from_layer": mc_from, "samples": int(samples), "seed": int(seed),
        "std_scale": scale.tolist(), "std_floor": floor.tolist(),
        "meaning": "sigma = sqrt((std_scale * s)^2 + std_floor^2) per output, s = the standard deviation of the "
                   f"outputs over {samples} fixed dropout masks of the dense head from layer '{mc_from}' (the "
                   "convolutional trunk runs once, batch norm in inference mode); point predictions are the "
                   "deterministic network's, unchanged; the validation Gaussian likelihood sets the ratio of scale "
                   "to floor, then one factor makes +/- sigma hold 68.3% of the validation residuals",
        "fitted_on": {"part": "validation", "n": int(len(y))}, "nominal": ONE_SIGMA,
        "coverage_68": {"validation_mc_spread_uncalibrated": coverage(mean, mc, y),
                        "validation_cross_fitted": coverage(mean, held, y),
                        "validation_in_sample": coverage(mean, calibrated_std(mc, scale, floor), y)},
        "spearman_sigma_vs_abs_error": {"validation": float(spearmanr(held.ravel(), np.abs(y - mean).ravel())[0])},
    }
    if test is not None:
        tm, tmc = test["outputs"].astype(np.float64), test["mc_std"].astype(np.float64)
        ty = np.asarray(y_test, dtype=np.float64).reshape(tm.shape)
        ts = calibrated_std(tmc, scale, floor)
        curves["test, calibrated"] = curve(tm, ts, ty)
        block["coverage_68"]["test"] = coverage(tm, ts, ty)
        block["coverage_68"]["test_mc_spread_uncalibrated"] = coverage(tm, tmc, ty)
        block["spearman_sigma_vs_abs_error"]["test"] = float(spearmanr(ts.ravel(), np.abs(ty - tm).ravel())[0])
        block["fitted_on"]["test_n"] = int(len(ty))
    cov = block["coverage_68"]
    say(f"MC dropout ({samples} masks from {mc_from}): 68% coverage {cov['validation_mc_spread_uncalibrated']:.3f} "
        f"uncalibrated -> {cov['validation_cross_fitted']:.3f} cross-fitted"
        + (f", test {cov['test']:.3f}" if test is not None else ""))
    return block, curves


def _fit_ood(reference: np.ndarray, scores: dict[str, np.ndarray], feature_layer: str, rings: int | None, k: int,
             quantile: float, n_fit: int, say: Callable) -> dict[str, Any]:
    """The rule's metadata from served k-NN scores of the validation (threshold) and test parts."""
    threshold = float(np.quantile(scores["validation"], quantile))
    share = {name: float(np.mean(s > threshold)) for name, s in scores.items()}
    where = f"'{feature_layer}'" + (f" averaged over {rings} centred rings" if rings else "")
    block = {
        "rule": "knn_distance_above", "feature_layer": feature_layer, "rings": rings, "k": int(k),
        "arrays": OOD_ARRAYS, "threshold": threshold, "quantile": quantile,
        "n_reference": int(len(reference)), "n_fit": int(n_fit), "n_threshold": int(len(scores["validation"])),
        "feature_dims": int(reference.shape[1]), "flagged_share": share,
        "meaning": f"flag out_of_distribution when the squared distance of the L2-normalised output of {where} to "
                   f"its {k}th nearest reference row (in-distribution stamps of the fit part) exceeds the "
                   f"{quantile} quantile of the same distance on the validation part, which the reference does "
                   "not hold",
    }
    say(f"ood: {k}-NN distance in {where} ({block['feature_dims']} dims, {len(reference)} reference rows), "
        f"threshold {threshold:.4f}; flagged " + ", ".join(f"{n} {v:.3f}" for n, v in share.items()))
    return block


def attach_uncertainty(artifact_dir: Path, *, x_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                       say: Callable[[str], Any] = print, x_test: np.ndarray | None = None,
                       y_test: np.ndarray | None = None, feature_layer: str | None = None,
                       feature_rings: int | None = OOD_RINGS, ood_k: int = OOD_K,
                       mc_samples: int = MC_SAMPLES, seed: int = 0, quantile: float = OOD_QUANTILE,
                       replace: bool = False, provenance: dict[str, Any] | None = None,
                       temperature: float | None = None, temperature_why: str | None = None) -> dict:
    """Fit and store calibration + an out-of-distribution rule in an unreleased CNN artifact (module docstring).

    ``x_*`` are raw stamps as the serving path receives them: (N, size, size, C) float32, NaN filled, BEFORE the
    model's preprocessing recipe. ``y_val`` / ``y_test``: class indices (classification, binary) or targets
    (regression (N,) or (N, K), vote fractions (N, K)). ``x_fit`` (the training images, or a sample of them) fits
    the OOD feature model; ``x_val`` (not trained on) fits the calibration and the OOD threshold; the optional
    ``x_test`` / ``y_test`` part, used by no fit, reports held-out numbers. Writes into ``artifact_dir`` (metadata
    keys ``calibration``, ``ood``, ``uncertainty``, ``plots.reliability``; files ``ood.npz``, ``reliability.png``)
    and returns ``{"calibration": ..., "ood": ...}``. ``replace`` allows refitting an artifact that has a block;
    ``provenance`` (JSON-able: where the parts came from) is stored as ``calibration.fitted_on.data``.
    ``temperature`` (classifiers): a temperature set by hand instead of fitted, with the reason
    ``temperature_why`` stored beside it (radio-first 1.1.0: its parts disagree, docs/models.md).
    """
    from training.plots import plot_coverage, plot_reliability

    path = Path(artifact_dir)
    meta = read_metadata(path)
    where = f"model {meta['name']}@{meta['version']}"
    info = ModelInfo(meta["name"], meta["version"], meta["family"], path, meta)
    if serving_kind(info) != "keras":
        raise StampflowError(f"{where}: attach_uncertainty is for CNN artifacts (the GP has its own rule)")
    if (meta.get("calibration") or meta.get("ood")) and not replace:
        raise StampflowError(f"{where} already has an uncertainty block; write a new version (or replace=True "
                             "for an unreleased artifact)")
    if len(x_val) != len(y_val) or (x_test is None) != (y_test is None) or (
            x_test is not None and len(x_test) != len(y_test)):
        raise StampflowError(f"{where}: x_val/y_val (and x_test/y_test) must come in pairs of equal length")
    task, recipe = meta["task"], dict(meta.get("preprocess") or {})
    if temperature is not None and (task not in CLASSIFIERS or not temperature > 0 or not temperature_why):
        raise StampflowError(f"{where}: a fixed temperature needs a classifier, a value > 0 and a reason "
                             f"(task {task}, temperature {temperature}, reason {temperature_why!r})")
    model = load_keras(path / meta.get("weights", "model.keras"))
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    feature_layer = feature_layer or feature_map_layer(model)
    mc_from = mc_head_start(model) if task not in CLASSIFIERS else None
    try:
        rings = feature_rings if len(model.get_layer(feature_layer).output.shape) == 4 else None
        serve = compile_serving(model, shape, feature_layer=feature_layer, feature_rings=rings, mc_from=mc_from,
                                mc_samples=mc_samples, mc_seed=seed)
    except ValueError as exc:
        raise StampflowError(f"{where}: {exc}") from None

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != shape:
            raise StampflowError(f"{where}: stamps must be {shape} (before the recipe), got {x.shape[1:]}")
        return serve(apply_recipe(x, recipe))

    say(f"{where}: uncertainty from fit n={len(x_fit)}, validation n={len(x_val)}"
        + (f", test n={len(x_test)}" if x_test is not None else ""))
    fit, val = run(x_fit), run(x_val)
    test = run(x_test) if x_test is not None else None
    if task in CLASSIFIERS:
        calibration, curves = _calibrate_classifier(task, val, y_val, test, y_test, seed, say, temperature,
                                                    temperature_why)
    else:
        calibration, curves = _calibrate_regression(val, y_val, test, y_test, mc_from=mc_from, samples=mc_samples,
                                                    seed=seed, say=say)
    # the OOD score comes from the serving graph itself, so the threshold is set on exactly what a worker computes
    reference = knn_reference(fit["features"], OOD_REFERENCE_MAX, seed)
    score = compile_serving(model, shape, feature_layer=feature_layer, feature_rings=rings, ood_reference=reference,
                            ood_k=ood_k)
    scored = {"validation": (x_val, val)} | ({"test": (x_test, test)} if test is not None else {})
    for x, part in scored.values():
        part["ood_score"] = score(apply_recipe(np.asarray(x, dtype=np.float32), recipe))["ood_score"].reshape(-1)
    ood = _fit_ood(reference, {n: part["ood_score"] for n, (_, part) in scored.items()}, feature_layer, rings,
                   ood_k, quantile, len(x_fit), say)
    np.savez(path / OOD_ARRAYS, reference=reference)
    title = f"{meta['name']}@{meta['version']}"
    if task in CLASSIFIERS:
        plot_reliability(curves, path / PLOT, title=f"{title} reliability")
    else:
        plot_coverage(curves, path / PLOT, title=f"{title} interval coverage")
    calibration["plot"] = PLOT
    if provenance:
        calibration["fitted_on"]["data"] = provenance
    meta.update(calibration=calibration, ood=ood, uncertainty=UNCERTAINTY_MEANING[task])
    meta["plots"] = {**(meta.get("plots") or {}), "reliability": PLOT}
    tmp = path / "metadata.json.partial"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(path / "metadata.json")
    _check_served(info, meta, x_val, val, calibration, ood, task)
    return {"calibration": calibration, "ood": ood}


def _check_served(info: ModelInfo, meta: dict, x_val: np.ndarray, val: dict, calibration: dict, ood: dict,
                  task: str) -> None:
    """Reload through `KerasCNN` and compare its predictions on (part of) the validation stamps with the fit's."""
    clf = KerasCNN.load(ModelInfo(info.name, info.version, info.family, info.path, meta))
    n = min(len(x_val), 256)
    served = clf.predict_batch(np.asarray(x_val[:n], dtype=np.float32))
    expected = served_prediction({k: v[:n] for k, v in val.items() if k != "features"}, task, clf.classes,
                                 clf.uncertainty)
    if not (np.allclose(served.probabilities, expected.probabilities, atol=1e-4)
            and np.allclose(served.uncertainty, expected.uncertainty, atol=1e-4)
            and np.array_equal(served.out_of_distribution, expected.out_of_distribution)):
        raise StampflowError(f"model {info.name}@{info.version}: served predictions differ from the fitted ones")


def release_with_uncertainty(source: Path, version: str, *, out_root: Path | None = None,
                             say: Callable[[str], Any] = print, **data: Any) -> Path:
    """Copy a released CNN artifact (same weights, byte for byte) to ``<root>/<name>/<version>`` and attach an
    uncertainty block to the copy (``data``: the keyword arguments of `attach_uncertainty`). The copy records
    which artifact it derives from; the source is never touched."""
    source = Path(source)
    meta = read_metadata(source)
    root = Path(out_root) if out_root else source.parent.parent
    target = root / meta["name"] / version
    if target.exists():
        raise StampflowError(f"{target} already exists")
    tmp = target.with_name(f".{version}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    try:
        weights = tmp / meta.get("weights", "model.keras")
        meta.update(version=version, code_version=code_version(),
                    created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    derived_from={"model": f"{meta['name']}@{meta['version']}",
                                  "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                                  "change": "same weights and metrics; adds calibration and an out-of-distribution "
                                            "rule (training.uncertainty)"})
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        attach_uncertainty(tmp, say=say, **data)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"wrote {target}")
    return target


#: Below this many validation stamps a temperature or a variance scale is noise: training skips the block.
MIN_VALIDATION = 40


def attach_after_training(artifact_dir: Path, *, x_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                          x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
                          say: Callable[[str], Any] = print) -> dict[str, Any]:
    """The last step of every CNN family's ``train``: `attach_uncertainty` on the artifact just written (not yet
    released), so a retrained model carries its calibration and OOD rule. Returns a short summary for the
    training output; with fewer than `MIN_VALIDATION` validation stamps it attaches nothing and says so."""
    if len(x_val) < MIN_VALIDATION:
        say(f"uncertainty: skipped, {len(x_val)} validation stamps (< {MIN_VALIDATION})")
        return {"attached": False, "reason": f"{len(x_val)} validation stamps (< {MIN_VALIDATION})"}
    out = attach_uncertainty(artifact_dir, x_fit=x_fit, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
                             say=say)
    cal, ood = out["calibration"], out["ood"]
    summary: dict[str, Any] = {"attached": True, "method": cal["method"], "ood_rule": ood["rule"],
                               "ood_flagged_share": ood["flagged_share"]}
    if cal["method"] == "temperature":
        summary.update(temperature=cal["temperature"], ece_before=cal["ece_before"], ece_after=cal["ece_after"])
    else:
        summary["coverage_68"] = cal["coverage_68"]
    return summary
