"""stargal 2.1.0's stamp recipe (models.stargal_recipe), its temperature, the GP predictor's exactness, and the
served artifacts: 2.0.0 unchanged, 2.3.0 (2.2.0 with a fitted-Gaussian size) the default with its recipe read from
metadata."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.base import InputSpec
from models.preprocess import fill_nan_by, fill_nan_core_ring, prepare_images
from models.registry import Registry
from models.stargal import (GPPredictor, StarGalaxyGP, build_muygps, calibrated_probabilities, features_from_images,
                            probabilities_from_means)
from models.stargal_recipe import StampRecipe, hand_features, soft_symmetrise
from schemas.errors import StampflowError
from training.stargal.alert_training import thin_alert_stars

S = 19
YY, XX = np.mgrid[:S, :S] - (S - 1) / 2


def gaussian(sigma: float, amp: float = 1000.0, dy: float = 0.0, dx: float = 0.0) -> np.ndarray:
    return amp * np.exp(-0.5 * ((YY - dy) ** 2 + (XX - dx) ** 2) / sigma ** 2)


def sky(rng: np.random.Generator, level: float = 100.0, noise: float = 5.0) -> np.ndarray:
    return level + rng.normal(0, noise, (S, S))


# ----------------------------------------------------------------------------------- neighbour suppression


def test_symmetric_source_is_untouched():
    rng = np.random.default_rng(0)
    n = sky(rng)
    img = gaussian(1.5) + gaussian(2.5, 300) + (n + n[::-1, ::-1]) / 2  # point-symmetric, noise included
    out = soft_symmetrise(img[None], 4.0, 5.0)[0]
    np.testing.assert_array_equal(out, img.astype(np.float32))


def test_bright_neighbour_is_suppressed_and_centre_kept():
    rng = np.random.default_rng(1)
    base = gaussian(1.5) + sky(rng)
    img = base + gaussian(1.2, 5000.0, dy=6, dx=2)  # a bright star 6.3 px off centre
    out = soft_symmetrise(img[None], 4.0, 5.0)[0]
    ny, nx = 9 + 6, 9 + 2
    assert img[ny, nx] > 4000
    # cut to its mirror (sky) + 5 sigma: sigma of the ring noise is ~5 (the neighbour barely reaches the ring)
    assert out[ny, nx] < 100 + 5 * 5 * 1.5 + 40
    assert out[ny, nx] <= img[9 - 6, 9 - 2] + 5 * 5 * 1.6
    r = np.hypot(YY, XX)
    np.testing.assert_array_equal(out[r <= 4], img.astype(np.float32)[r <= 4])  # the core is never changed
    assert np.all(out <= img.astype(np.float32) + 1e-3)  # suppression only lowers pixels
    with pytest.raises(ValueError):
        soft_symmetrise(np.zeros((1, 20, 20)), 4.0, 5.0)  # no centre pixel


# ------------------------------------------------------------------------------------------ hand features


@pytest.mark.parametrize("method", ["fixed", "adaptive"])
def test_wider_gaussian_is_larger_and_less_concentrated(method):
    rng = np.random.default_rng(2)
    stamps = np.stack([gaussian(s) + sky(rng, noise=1.0) for s in (1.0, 1.5, 2.2, 3.0)])
    h = hand_features(stamps, method)
    assert h.shape == (4, 2)
    assert np.all(np.diff(h[:, 0]) > 0), h[:, 0]   # size grows with sigma
    assert np.all(np.diff(h[:, 1]) < 0), h[:, 1]   # concentration falls
    assert np.all((h[:, 1] > 0) & (h[:, 1] <= 1))


def test_adaptive_moments_measure_a_gaussian_fwhm():
    h = hand_features(np.stack([gaussian(s) for s in (1.2, 2.0)]), "adaptive")
    np.testing.assert_allclose(h[:, 0], 2.3548 * np.array([1.2, 2.0]), rtol=0.05)


# ---------------------------------------------------------------------------------------------- NaN rule


def test_nan_rule_core_max_and_ring_sky():
    rng = np.random.default_rng(3)
    img = (gaussian(1.5) + sky(rng)).astype(np.float32)
    img[9, 9] = np.nan          # masked saturated core
    img[1, 15] = np.nan         # a missing sky pixel
    out = fill_nan_core_ring(img)
    assert out[9, 9] == np.nanmax(img)
    ring = np.zeros((S, S), bool)
    ring[:2] = ring[-2:] = True
    ring[:, :2] = ring[:, -2:] = True
    assert out[1, 15] == np.median(img[ring & np.isfinite(img)])
    assert np.isfinite(out).all() and np.all(out[np.isfinite(img)] == img[np.isfinite(img)])
    # The rule travels in the spec; a plain spec keeps the finite-median fill of 1.0.0 and 2.0.0.
    plain = InputSpec(survey="ZTF", size=S, pixel_scale=1.01)
    assert plain.nan_fill == "median" and "nan_fill" not in plain.as_dict()
    spec = replace(plain, nan_fill="core_max_ring_median")
    assert InputSpec.from_dict(spec.as_dict()).nan_fill == "core_max_ring_median"
    with pytest.raises(ValueError, match="unknown nan_fill"):
        replace(plain, nan_fill="zero")
    np.testing.assert_array_equal(fill_nan_by(img, spec), out)
    assert fill_nan_by(img, plain)[9, 9] == np.nanmedian(img)
    padded = np.pad(img, 22, constant_values=np.nan)
    np.testing.assert_array_equal(prepare_images(padded[None], spec)[0, :, :, 0], out)


def test_recipe_metadata_round_trip_and_errors():
    r = StampRecipe(nan_fill="core_max_ring_median", symmetrise=True, hand_size="fixed", hand_mean=(3.0, 0.6),
                    hand_std=(1.0, 0.1), hand_scale=2.0)
    assert StampRecipe.from_metadata(r.as_metadata()) == r
    assert StampRecipe.from_metadata(None) == StampRecipe()
    with pytest.raises(ValueError):
        StampRecipe.from_metadata({"symmetrize": {}})
    with pytest.raises(ValueError):
        StampRecipe.from_metadata({"hand_features": {"size": "median"}})


# ------------------------------------------------------------------------------------- temperature, GP


def test_temperature_keeps_labels_and_sharpens_with_a():
    rng = np.random.default_rng(4)
    means = rng.uniform(-1.2, 1.2, (200, 2))
    for a in (0.5, 4.8, 20.0):
        p = calibrated_probabilities(means, a)
        np.testing.assert_allclose(p.sum(axis=1), 1.0)
        np.testing.assert_array_equal(p.argmax(axis=1), means.argmax(axis=1))
    s = np.array([[0.4, -0.4]])
    assert calibrated_probabilities(s, 1.0)[0, 0] < calibrated_probabilities(s, 4.8)[0, 0] < 1
    with pytest.raises(ValueError):
        calibrated_probabilities(np.zeros((2, 3)), 1.0)


def test_predictor_equals_the_muygpys_path_on_random_data():
    """The served predictor (flat gather of K_in, one solve for mean and variance) against the path it replaced:
    3-D fancy indexing of the training kernel and MuyGPyS's posterior_mean + posterior_variance."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 18))
    t = 2.0 * np.eye(2)[rng.integers(0, 2, 400)] - 1.0
    q = rng.normal(size=(300, 18))
    muygps = build_muygps("matern", 4.5, 0.15, 2.5, 0.3)
    pred = GPPredictor(x, t, 50, muygps, "l2", chunk=128)
    mean, var = pred.posterior(q)
    nn, cross, _ = pred.neighbourhoods(q, pairwise=False)
    kin = pred._train_kernel[nn[:, :, None], nn[:, None, :]]
    kcross = muygps.kernel(cross)
    np.testing.assert_allclose(mean, muygps.posterior_mean(kin, kcross, t[nn]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(var, np.maximum(muygps.posterior_variance(kin, kcross).reshape(-1), 0),
                               rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------- served artifacts


@pytest.fixture(scope="module")
def stamps(data_dir):
    from training.stargal.data import load_stargal_dir

    images, labels, _ = load_stargal_dir(data_dir / "ztf_stargal" / "cutouts", size=19)
    return images[::20], labels[::20]


def test_default_is_2_3_0_with_its_recipe_and_2_0_0_still_serves_as_before(stamps):
    reg = Registry()
    assert reg.resolve("stargal").version == "2.3.0"
    new, old = reg.load("stargal"), reg.load("stargal@2.0.0")
    assert isinstance(new, StarGalaxyGP) and isinstance(old, StarGalaxyGP)
    assert old.recipe == StampRecipe() and old.calibration is None and old.input_spec.nan_fill == "median"
    assert new.recipe.symmetrise and new.recipe.hand_size == "gauss" and new.calibration["method"] == "temperature"
    assert new.input_spec.nan_fill == "core_max_ring_median"
    assert new.predictor.train_features.shape[1] == 18
    images, labels = stamps
    p_old, p_new = old.predict_batch(images[..., None]), new.predict_batch(images[..., None])
    # 2.0.0 is the plain recipe: z-score + PCA of the raw crop, probabilities clip((mu + 1) / 2).
    np.testing.assert_array_equal(old.features(images),
                                  features_from_images(images, "zscore", old.mean, old.components))
    np.testing.assert_allclose(p_old.probabilities,
                               probabilities_from_means(old.predictor.posterior(old.features(images))[0]), atol=1e-6)
    assert np.mean(np.array(p_new.labels) == labels) > 0.9 and np.mean(np.array(p_old.labels) == labels) > 0.9
    np.testing.assert_allclose(p_new.probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_bad_recipe_in_metadata_is_one_line_error(tmp_path):
    info = Registry().resolve("stargal@2.1.0")
    meta = dict(info.metadata)
    meta["preprocessing"] = {"symmetrise": {}, "blur": 1}
    with np.load(info.path / "weights.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    with pytest.raises(StampflowError, match="unknown preprocessing keys: blur"):
        StarGalaxyGP.from_arrays(info, meta, arrays)
    meta = dict(info.metadata, calibration={"method": "platt"})
    with pytest.raises(StampflowError, match="unknown calibration"):
        StarGalaxyGP.from_arrays(info, meta, arrays)


# ------------------------------------------------------------------------------------------------ training


def test_tiny_recipe_train_writes_what_serving_reads(tmp_path, data_dir):
    """train() with the 2.1.0 options on a small real set: metadata carries the recipe and the temperature, the
    registry serves it with the same features training stored, and the temperature keeps the labels."""
    import json
    import shutil

    from training.family import TrainOptions
    from training.stargal import FAMILY as STARGAL
    from training.stargal.train import train

    cut = tmp_path / "cutouts"
    cut.mkdir()
    for kind in ("star", "galaxy"):
        for f in sorted((data_dir / "ztf_stargal" / "cutouts").glob(f"{kind}_*.fits"),
                        key=lambda p: int(p.stem.split("_")[1]))[:30]:
            shutil.copy(f, cut / f.name)
    out = tmp_path / "registry"
    train(TrainOptions(data=cut, out_root=out, version="2.1.0"),
          STARGAL.parse({"normalisations": "zscore", "pca_dims": "8", "folds": "3", "alert_folds": "3",
                         "nn_count": "10", "batch_count": "40", "stamp": "template", "size": "19",
                         "alerts": str(data_dir / "ztf_alerts" / "fink-science"), "smoothness": "2.5",
                         "final_optimizer": "lbfgsb", "symmetrise": "true", "nan_fill": "core_max_ring_median",
                         "hand_features_weight": "0.5", "calibrate": "temperature", "plots": "false",
                         "quiet": "true"}))
    art = out / "stargal" / "2.1.0"
    meta = json.loads((art / "metadata.json").read_text())
    assert meta["preprocessing"]["nan_fill"] == "core_max_ring_median" and meta["preprocessing"]["symmetrise"]
    hand = meta["preprocessing"]["hand_features"]
    assert hand["size"] == "fixed" and hand["scale"] > 0 and len(hand["mean"]) == len(hand["std"]) == 2
    cal = meta["calibration"]
    assert cal["method"] == "temperature" and cal["a"] > 0 and cal["b"] == 0.0
    assert set(cal["ece_before"]) == set(cal["ece_after"]) == {"curated_cv", "alerts_cv", "curated_holdout"}
    assert meta["metrics"]["alerts_cv"]["n"] > 10
    clf = Registry([out]).load("stargal@2.1.0")
    with np.load(art / "weights.npz", allow_pickle=False) as z:
        stored = z["train_features"]
        hashes = [bytes(h).hex() for h in z["train_file_sha256"]]
    assert stored.shape[1] == 10  # PCA 8 + 2 hand features
    from training.stargal.data import load_stargal_dir

    images, _, _, info = load_stargal_dir(cut, size=19, return_info=True)
    # The curated training rows come first in the stored features, in the order of their file hashes: serving
    # recomputes the same features from the stamps.
    rows = [info.hashes.index(h) for h in hashes]
    np.testing.assert_allclose(clf.features(images[rows]), stored[:len(rows)], rtol=1e-5, atol=1e-4)
    pred = clf.predict_batch(images[..., None])
    means = clf.predictor.posterior(clf.features(images))[0]
    np.testing.assert_array_equal([clf.classes.index(lbl) for lbl in pred.labels], means.argmax(axis=1))
    np.testing.assert_array_equal(pred.probabilities.argmax(axis=1), means.argmax(axis=1))


def test_thin_alert_stars_keeps_every_galaxy_and_a_seeded_share_of_stars():
    y = np.array([0] * 100 + [1] * 7 + [0] * 20)
    keep = thin_alert_stars(y, 0.35, seed=0)
    assert keep[y == 1].all()
    assert keep[y == 0].sum() == round(0.35 * 120)
    np.testing.assert_array_equal(keep, thin_alert_stars(y, 0.35, seed=0))
    assert not np.array_equal(keep, thin_alert_stars(y, 0.35, seed=1))
    assert thin_alert_stars(y, 1.0, seed=0).all()
    assert thin_alert_stars(np.array([0, 1, 1]), 0.01, seed=0).tolist() == [True, True, True]  # at least one star


def test_default_artifact_records_its_thinning():
    meta = Registry().resolve("stargal").metadata
    alerts = meta["training_data"]["alerts"]
    assert alerts["star_keep"] == 0.35 and alerts["n_star_trained"] == round(0.35 * alerts["n_star"])
