"""radio-first 2.0.0 pieces: near-duplicate detection, the CDL1 fold, dihedral transforms, the flat ensemble graph,
and the bundled 1.0.0 artifact's accuracy on real Griese ``valid`` images, through the serving path."""
from __future__ import annotations

import numpy as np
import pytest

from training.radio.dedup import coordinate_matches, image_hashes, max_ncc, shifted_ncc
from training.radio.ensemble import DIHEDRAL, dihedral, fold_matrix, fold_probabilities, served_model
from training.radio.network import CLASSES, build_model

GRIESE_ZIP = "radio/first_galaxy_dataset/galaxy_data_trainvalid_h5.zip"


def _blob_field(rng, n_sources: int, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size), np.float32)
    for _ in range(n_sources):
        cy, cx = rng.uniform(8, size - 8, 2)
        s = rng.uniform(1.5, 4)
        img += rng.uniform(0.3, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return img


def test_shifted_copy_is_a_near_duplicate_and_another_field_is_not():
    rng = np.random.default_rng(0)
    a = _blob_field(rng, 4)
    other = _blob_field(rng, 4)
    shifted = np.roll(a, (2, -1), axis=(0, 1))
    ncc = shifted_ncc(a[None], np.stack([shifted, other]), shift=3)[0]
    assert ncc[0] > 0.99 and ncc[1] < 0.9
    # without allowing the shift the same copy falls below the threshold: the shift search is what finds it
    assert shifted_ncc(a[None], shifted[None], shift=0)[0, 0] < 0.99
    best, which = max_ncc(np.stack([other, a]), np.stack([shifted, _blob_field(rng, 3)]), shift=3, window=48,
                          coarse_bin=2, coarse_min=0.5)
    assert best[0] > 0.99 and which[0] == 1 and best[1] < 0.99


def test_image_hashes_and_coordinate_matches():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 255, (3, 300, 300), dtype=np.uint8)
    imgs[2, 75:225, 75:225] = imgs[0, 75:225, 75:225]  # same centre, different border
    h = image_hashes(imgs)
    assert h[0] == h[2] != h[1]
    pairs = coordinate_matches([10.0, 20.0], [5.0, -5.0], [10.001, 40.0], [5.001, 0.0], 30.0)
    assert [(i, j) for i, j, _ in pairs] == [(0, 0)] and pairs[0][2] == pytest.approx(5.07, abs=0.05)


def test_cdl1_fold_sums_the_two_bent_groups():
    w = fold_matrix(5)
    assert w.shape == (5, 4) and w[3, 3] == w[4, 3] == 1 and w.sum() == 5
    p = np.array([[0.1, 0.2, 0.3, 0.15, 0.25]])
    np.testing.assert_allclose(fold_probabilities(p), [[0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_allclose(fold_probabilities(p[:, :4]), p[:, :4])  # 4 classes pass unchanged


def test_dihedral_transforms_are_the_eight_symmetries():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    outs = {dihedral(x, k, f).tobytes() for k, f in DIHEDRAL}
    assert len(outs) == 8
    np.testing.assert_array_equal(dihedral(x, 0, False), x)


def test_served_model_averages_members_and_folds_cdl1():
    a = build_model(n_classes=4, size=32, filters=(4, 8), dense=8, seed=0)
    b = build_model(n_classes=5, size=32, filters=(4, 8), dense=8, seed=1)
    m = served_model([a, b])  # widths are read off the members
    x = np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)
    expect = (np.asarray(a(x, training=False)) + fold_probabilities(np.asarray(b(x, training=False)))) / 2
    np.testing.assert_allclose(np.asarray(m(x, training=False)), expect, rtol=1e-5, atol=1e-6)
    assert {layer.name for layer in m.layers} >= {"m0_dense", "m1_fold_cdl1", "mean_probability"}


def test_bundled_1_0_0_reproduces_its_recorded_valid_accuracy(data_dir):
    from models.cnn import KerasCNN
    from models.preprocess import prepare_images
    from models.registry import Registry
    from training.radio.griese import load_griese

    valid = load_griese(data_dir / GRIESE_ZIP, split="valid")
    clf = KerasCNN.load(Registry().resolve("radio-first@1.0.0"))
    x = prepare_images(valid.images, clf.input_spec, 1.8)
    pred = clf.predict_batch(x)
    acc = float(np.mean([CLASSES.index(lbl) == y for lbl, y in zip(pred.labels, valid.labels)]))
    assert acc == pytest.approx(0.845, abs=0.006)  # 169 / 200, as released
