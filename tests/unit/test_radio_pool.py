"""radio-first 2.0.0 pieces: near-duplicate detection, the CDL1 fold, dihedral transforms, the flat ensemble graph,
and the bundled 1.0.0 artifact's accuracy on real Griese ``valid`` images, through the serving path."""
from __future__ import annotations

import numpy as np
import pytest

from training.radio.dedup import coordinate_matches, image_hashes, max_ncc, ncc_pairs, pixel_difference, shifted_ncc
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


def test_pixel_test_tells_a_reused_cutout_from_another_compact_source():
    """Two unresolved sources are both a centred beam (NCC > 0.99); a re-used cutout has the same pixels."""
    yy, xx = np.mgrid[:300, :300]
    rng = np.random.default_rng(2)

    def beam(cy, cx, noise):
        img = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5 ** 2)) + rng.normal(0, noise, yy.shape)
        return np.clip(np.round(np.where(img > 25, img, 0)), 0, 255).astype(np.uint8)

    a = beam(150.0, 150.0, 2.0)
    reused = np.roll(a, (1, -2), axis=(0, 1))          # the same pixels, shifted: a duplicate
    other = beam(150.15, 149.85, 2.0)                  # another compact source: a sub-pixel offset, own noise
    s = lambda im: np.sqrt(im.astype(np.float32) / 255)[75:225, 75:225]  # noqa: E731
    pairs = ncc_pairs(s(a)[None], np.stack([s(reused), s(other)]), 0.99)
    assert {int(j) for _, j in pairs} == {0, 1}        # NCC alone cannot tell them apart
    assert pixel_difference(a, reused) == 0.0
    assert pixel_difference(a, other) >= 10.0


def test_stretch_lifts_faint_emission_and_keeps_the_ends():
    from models.preprocess import apply_recipe, stretch_images

    x = np.array([[[0.0, 0.04], [0.25, 1.0]]], dtype=np.float32)
    np.testing.assert_allclose(stretch_images(x, "sqrt"), [[[0.0, 0.2], [0.5, 1.0]]], rtol=1e-6)
    np.testing.assert_allclose(stretch_images(x, "qroot"), [[[0.0, 0.04 ** 0.25], [0.5 ** 0.5, 1.0]]], rtol=1e-6)
    a = stretch_images(x, "asinh")
    assert a[0, 0, 0] == 0 and a[0, 1, 1] == pytest.approx(1.0) and a[0, 0, 1] > 0.04
    raw = np.array([[[2.0, 3.0], [6.0, 18.0]]], dtype=np.float32)
    plain = apply_recipe(raw, {"normalise": "minmax"})
    np.testing.assert_array_equal(apply_recipe(raw, {"normalise": "minmax", "stretch": None}), plain)
    np.testing.assert_allclose(apply_recipe(raw, {"normalise": "minmax", "stretch": "sqrt"}), np.sqrt(plain))
    with pytest.raises(ValueError, match="unknown stretch"):
        stretch_images(x, "log")


def test_served_model_copies_the_extra_convolution():
    a = build_model(n_classes=4, size=32, filters=(4, 8), dense=8, seed=0, extra_conv=12)
    m = served_model([a])
    x = np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(m(x, training=False)), np.asarray(a(x, training=False)), rtol=1e-5,
                               atol=1e-6)
    assert m.get_layer("m0_conv2b").filters == 12



def test_patch_stem_lands_on_the_quarter_grid_and_survives_the_served_copy():
    a = build_model(n_classes=4, size=32, filters=(4, 8), dense=8, seed=0, stem="patch4")
    assert tuple(a.get_layer("conv1").strides) == (4, 4) and a.get_layer("conv1").output.shape[1] == 8
    assert "pool1" not in [layer.name for layer in a.layers]  # the stem itself is the 4x downsampling
    m = served_model([a])
    x = np.random.default_rng(1).random((3, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(m(x, training=False)), np.asarray(a(x, training=False)), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="unknown stem"):
        build_model(n_classes=4, size=32, filters=(4, 8), stem="conv3")

def test_best_epoch_by_balanced_accuracy_is_restored():
    from training.cnn import predict_array
    from training.evaluation import balanced_accuracy
    from training.radio.ensemble import train_network

    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), 8)
    x = rng.random((32, 32, 32, 1), dtype=np.float32) * 0.2
    for c in range(4):  # a bright quadrant per class: learnable in a few epochs
        x[y == c, (c // 2) * 16:(c // 2) * 16 + 16, (c % 2) * 16:(c % 2) * 16 + 16] += 0.8
    model, info = train_network(x, y, x, y, epochs=3, batch=8, seed=0, augment="dihedral", filters=(4, 8),
                                select=True)
    scores = info["history"]["val_balanced_accuracy"]
    assert len(scores) == 3 and info["best_epoch"] == int(np.argmax(scores)) + 1
    assert balanced_accuracy(y, predict_array(model, x).argmax(axis=1)) == pytest.approx(max(scores))


def test_a_pretrained_network_is_where_training_starts():
    """``init`` (pretraining on the other FIRST sets, bench/radio_ablation.py pretrain_sqrt): the new network starts
    from its weights, not from the seeded initialisation; with a vanishing learning rate it stays there."""
    from training.radio.ensemble import train_network

    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(2), 8)  # the other sets are FRI / FRII only: two of the four outputs are never seen
    x = rng.random((16, 32, 32, 1), dtype=np.float32)
    first, _ = train_network(x, y, None, None, epochs=2, batch=8, seed=1, augment="dihedral", filters=(4, 8))
    again, _ = train_network(x, np.repeat(np.arange(4), 4), None, None, epochs=1, batch=8, seed=2, lr=1e-12,
                             augment="dihedral", filters=(4, 8), init=first)
    fresh, _ = train_network(x, np.repeat(np.arange(4), 4), None, None, epochs=1, batch=8, seed=2, lr=1e-12,
                             augment="dihedral", filters=(4, 8))
    w_first, w_again, w_fresh = (m.get_layer("conv1").get_weights()[0] for m in (first, again, fresh))
    np.testing.assert_allclose(w_again, w_first, atol=1e-6)
    assert np.abs(w_fresh - w_first).max() > 1e-3


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


def test_pixel_guard_on_real_griese_compacts_catches_a_reused_cutout(data_dir):
    """On the real Griese Compact images: train/valid pairs at NCC >= 0.99 are never pixel-identical (the
    measured fact behind guard=pixels), and a re-used, shifted copy of a valid image planted among the train
    images is caught by the guard while the real train images pass."""
    from training.radio.griese import load_griese
    from training.radio.pool import _pixel_guard

    g = load_griese(data_dir / GRIESE_ZIP, split="train,valid")
    compact = CLASSES.index("Compact")
    valid = np.flatnonzero((g.splits == "valid") & (g.labels == compact))[:25]
    train = np.flatnonzero((g.splits == "train") & (g.labels == compact))[:60]
    planted = np.roll(g.images[valid[3]], (1, 2), axis=(0, 1))[None]
    images = np.concatenate([g.images[valid], g.images[train], planted])
    n_v = len(valid)
    x = images.astype(np.float32)
    x = x / np.maximum(x.reshape(len(x), -1).max(axis=1), 1)[:, None, None]
    stretched = np.sqrt(x[:, 75:225, 75:225])
    near = np.arange(n_v, len(images))       # every train image (and the planted copy) as an NCC candidate
    source = np.array(["griese"] * len(images))
    dropped, info = _pixel_guard(images, stretched, np.arange(n_v), near, source, 0.99)
    assert len(images) - 1 in dropped                    # the re-used cutout stays out
    pairs = ncc_pairs(stretched[:n_v], stretched[n_v:-1], 0.99)
    assert len(pairs) > 0                                 # real NCC twins exist among these compacts
    diffs = [pixel_difference(images[i], images[n_v + j]) for i, j in pairs]
    assert min(diffs) > 2.0                               # none is the same pixels
    assert info["checked"] == len(near)


def test_distillation_targets_soften_but_never_flip_a_label():
    from training.radio.ensemble import distill_targets

    y = np.array([0, 1, 2, 3])
    teacher = np.array([[0.1, 0.9, 0, 0], [0, 1, 0, 0], [0.25, 0.25, 0.25, 0.25], [0, 0, 0.7, 0.3]])
    t = distill_targets(y, teacher, 0.5)
    np.testing.assert_allclose(t.sum(axis=1), 1.0)
    assert (t.argmax(axis=1) == y).all()                      # a teacher at 0.9 against the label only ties it
    np.testing.assert_allclose(t[0], [0.55, 0.45, 0, 0])
    np.testing.assert_allclose(distill_targets(y, teacher, 1.0), np.eye(4)[y])
    with pytest.raises(ValueError, match="outside"):
        distill_targets(y, teacher, 1.5)
    with pytest.raises(ValueError, match="teacher probabilities"):
        distill_targets(y, teacher[:3], 0.5)


def test_a_student_learns_the_soft_targets_and_is_chosen_on_the_labels():
    """``soft`` (distillation): the network is fitted to target probabilities with the categorical cross-entropy;
    the best epoch is still chosen on the carved part's labels."""
    from training.cnn import predict_array
    from training.radio.ensemble import distill_targets, train_network

    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(4), 8)
    x = rng.random((32, 32, 32, 1), dtype=np.float32) * 0.2
    r = np.hypot(*np.mgrid[:32, :32] - 15.5)
    for c in range(4):  # a centred disc whose radius is the class: unchanged by the dihedral augmentation
        x[np.ix_(y == c)] += 0.8 * (r < 3 + 3 * c)[None, :, :, None]
    soft = distill_targets(y, np.full((32, 4), 0.25), 0.6)     # label 0.7, every other class 0.1
    common = dict(epochs=40, batch=8, seed=0, augment="dihedral", filters=(4, 8), lr=3e-3)
    chosen, info = train_network(x, y, x, y, select=True, soft=soft, **common)
    assert info["best_epoch"] is not None and len(info["history"]["val_balanced_accuracy"]) == 40
    assert len(info["history"]["accuracy"]) == 40   # the same history key as a run on the labels
    assert (predict_array(chosen, x).argmax(axis=1) == y).all()
    student, _ = train_network(x, y, None, None, soft=soft, **common)
    hard, _ = train_network(x, y, None, None, **common)
    p_soft, p_hard = predict_array(student, x), predict_array(hard, x)
    assert (p_soft.argmax(axis=1) == y).all()
    # fitted towards 0.7, where the same network on the labels goes towards 1
    assert float(np.median(p_soft.max(axis=1))) < 0.85 < float(np.median(p_hard.max(axis=1)))
    with pytest.raises(ValueError, match="exclusive"):
        train_network(x, y, None, None, epochs=1, soft=soft, sub=y)


def test_suspect_labels_are_confidently_contradicted_ones():
    from training.radio.ensemble import suspect_labels

    y = np.array([0, 0, 1, 2, 3])
    p = np.array([[0.10, 0.80, 0.05, 0.05],   # contradicted, own label 0.10: suspect
                  [0.25, 0.60, 0.10, 0.05],   # contradicted but own label 0.25: kept
                  [0.05, 0.15, 0.40, 0.40],   # own label low but two others tie above it: suspect
                  [0.10, 0.10, 0.15, 0.65],   # contradicted, 0.15: suspect
                  [0.30, 0.20, 0.35, 0.15]])  # own 0.15 and another wins: suspect
    assert suspect_labels(p, y).tolist() == [True, False, True, True, True]
    assert suspect_labels(np.eye(4)[[0, 0, 1, 2, 3]], y).sum() == 0
