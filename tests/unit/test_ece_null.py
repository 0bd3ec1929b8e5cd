"""`training.calibration.ece_if_calibrated`: the ECE a perfectly calibrated model would show at this sample size,
against which an observed ECE is judged (radio-first's `valid` has only 200 stamps)."""
from __future__ import annotations

import numpy as np

from training.calibration import ece_if_calibrated, expected_calibration_error


def _probabilities(n: int, k: int, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, 2.0, (n, k))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_null_is_the_ece_of_labels_drawn_from_the_model():
    p = _probabilities(200, 4, 0)
    rng = np.random.default_rng(1)
    direct = [expected_calibration_error(p, np.array([rng.choice(4, p=row) for row in p])) for _ in range(300)]
    null = ece_if_calibrated(p, draws=3000, seed=2)
    assert abs(null["median"] - np.median(direct)) < 0.006
    assert null["q05"] < null["median"] < null["q95"] and null["n"] == 200


def test_calibrated_labels_pass_and_overconfident_ones_do_not():
    p = _probabilities(300, 4, 3)
    rng = np.random.default_rng(4)
    calibrated = np.array([rng.choice(4, p=row) for row in p])
    ok = ece_if_calibrated(p, expected_calibration_error(p, calibrated))
    assert ok["p_value"] > 0.01
    # the same probabilities, but the predicted class is right only 40% of the time: far beyond sampling noise
    wrong = np.where(rng.random(300) < 0.4, p.argmax(axis=1), (p.argmax(axis=1) + 1) % 4)
    bad = ece_if_calibrated(p, expected_calibration_error(p, wrong))
    assert bad["p_value"] == 0.0


def test_the_null_shrinks_with_the_sample():
    small = ece_if_calibrated(_probabilities(100, 4, 5))["median"]
    large = ece_if_calibrated(_probabilities(5000, 4, 5))["median"]
    assert large < small / 3
