"""The fitted-Gaussian size of star/galaxy 2.3.0 (`models.stargal_recipe.gauss_fwhm`): known widths, agreement with
a Levenberg-Marquardt fit of the same model, robustness to a neighbour, and its place in the recipe."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from models.stargal_recipe import StampRecipe, gauss_fwhm, hand_features, soft_symmetrise

S = 19
YY, XX = np.mgrid[:S, :S] - (S - 1) / 2


def gaussian(fwhm: float, amp: float = 1000.0, dy: float = 0.0, dx: float = 0.0) -> np.ndarray:
    sigma = fwhm / 2.3548
    return amp * np.exp(-0.5 * ((YY - dy) ** 2 + (XX - dx) ** 2) / sigma ** 2)


def lm_fwhm(img: np.ndarray, box: int = 15) -> float:
    """Reference: scipy's least squares, a * Gaussian + b with a free centre (within 2 px), started at the centre
    with FWHM 2.8 px, over the central box."""
    t = (S - box) // 2
    p = img[t:t + box, t:t + box].astype(np.float64)
    yy, xx = np.mgrid[:box, :box] - (box - 1) / 2

    def res(q):
        a, cy, cx, s, b = q
        return (a * np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / s ** 2) + b - p).ravel()

    b0 = float(np.median(p))
    r = least_squares(res, [p.max() - b0, 0.0, 0.0, 2.8 / 2.3548, b0],
                      bounds=([0, -2, -2, 0.3, -np.inf], [np.inf, 2, 2, 6, np.inf]))
    return 2.3548 * r.x[3]


@pytest.mark.parametrize("fwhm", [1.8, 2.4, 2.8, 3.5, 4.5])
def test_known_widths_at_subpixel_centres_with_sky_and_noise(fwhm):
    rng = np.random.default_rng(int(fwhm * 10))
    stamps = np.stack([gaussian(fwhm, dy=dy, dx=dx) + 150.0 + rng.normal(0, 3.0, (S, S))
                       for dy, dx in ((0, 0), (0.4, -0.3), (-0.8, 0.6), (1.2, 0.2))])
    np.testing.assert_allclose(gauss_fwhm(stamps), fwhm, rtol=0.03)


def test_agrees_with_a_levenberg_marquardt_fit():
    rng = np.random.default_rng(7)
    stamps, ref = [], []
    for _ in range(40):
        fwhm = rng.uniform(1.8, 4.5)
        img = (gaussian(fwhm, amp=rng.uniform(80, 3000), dy=rng.uniform(-1, 1), dx=rng.uniform(-1, 1))
               + rng.uniform(50, 500) + rng.normal(0, 6.0, (S, S)))
        stamps.append(img)
        ref.append(lm_fwhm(img))
    rel = np.abs(gauss_fwhm(np.stack(stamps)) / np.array(ref) - 1)
    assert np.median(rel) < 0.01, rel
    assert rel.max() < 0.05, rel


def test_a_bright_neighbour_after_the_recipes_suppression():
    # a star of 2.4 px with a 5x brighter star 6 px away. In the box, the neighbour's wing pulls any least-squares
    # fit of one Gaussian (here to ~1.9 px, as scipy's); the recipe suppresses it first (`soft_symmetrise`), and
    # then the fit recovers the core, as scipy's does on the same stamp
    rng = np.random.default_rng(0)
    img = gaussian(2.4) + gaussian(2.4, 5000.0, dy=6, dx=0) + 100.0 + rng.normal(0, 3.0, (S, S))
    assert gauss_fwhm(img[None])[0] == pytest.approx(lm_fwhm(img), rel=0.02)
    sym = soft_symmetrise(img[None], 4.0, 5.0)
    assert gauss_fwhm(sym)[0] == pytest.approx(2.4, rel=0.03)
    assert gauss_fwhm(sym)[0] == pytest.approx(lm_fwhm(sym[0]), rel=0.02)


def test_empty_batch_and_the_recipe_column():
    assert gauss_fwhm(np.zeros((0, S, S))).shape == (0,)
    stamps = np.stack([gaussian(f) + 100.0 for f in (2.0, 3.0)])
    h = hand_features(stamps, "gauss")
    np.testing.assert_allclose(h[:, 0], gauss_fwhm(stamps))
    np.testing.assert_allclose(h[:, 1], hand_features(stamps, "fixed")[:, 1])   # the concentration is unchanged
    with pytest.raises(ValueError):
        hand_features(stamps, "nope")


def test_recipe_metadata_names_the_gaussian_size():
    r = StampRecipe(nan_fill="core_max_ring_median", symmetrise=True, hand_size="gauss", hand_mean=(2.5, 0.4),
                    hand_std=(0.5, 0.1), hand_scale=3.0)
    meta = r.as_metadata()
    assert meta["hand_features"]["names"] == ["gauss_fwhm_px", "concentration"]
    assert StampRecipe.from_metadata(meta) == r
