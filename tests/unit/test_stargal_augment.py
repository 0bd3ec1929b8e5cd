"""The curated-cutout PSF broadening (training.stargal.augment): the FWHM it promises, flux kept, seeded."""
import numpy as np
import pytest

from models.stargal_recipe import FWHM_PER_SIGMA
from training.stargal.augment import broaden_psf


def gaussian_star(fwhm: float, size: int = 31) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - size // 2
    s = fwhm / FWHM_PER_SIGMA
    return np.exp(-(x * x + y * y) / (2 * s * s)).astype(np.float32)


def moment_fwhm(img: np.ndarray) -> float:
    y, x = np.mgrid[:img.shape[0], :img.shape[1]] - img.shape[0] // 2
    return float(np.sqrt((img * (x * x + y * y)).sum() / img.sum() / 2) * FWHM_PER_SIGMA)


def test_broadened_star_has_the_target_fwhm_and_keeps_its_flux():
    star = gaussian_star(1.8)
    out, targets = broaden_psf(star[None], (2.6, 2.6), native_fwhm=1.8, seed=0)
    assert targets.tolist() == [2.6]
    assert moment_fwhm(out[0]) == pytest.approx(2.6, rel=0.01)
    assert out[0].sum() == pytest.approx(star.sum(), rel=1e-3)


def test_targets_are_seeded_and_inside_the_range():
    stars = np.stack([gaussian_star(1.8)] * 20)
    a, ta = broaden_psf(stars, (2.0, 2.7), native_fwhm=1.8, seed=3)
    b, tb = broaden_psf(stars, (2.0, 2.7), native_fwhm=1.8, seed=3)
    assert np.array_equal(a, b) and np.array_equal(ta, tb)
    assert ((ta >= 2.0) & (ta <= 2.7)).all() and ta.std() > 0
    widths = np.array([moment_fwhm(x) for x in a])
    assert np.allclose(widths, ta, rtol=0.01)


def test_a_target_below_the_native_width_leaves_the_image_alone():
    star = gaussian_star(1.8)
    out, _ = broaden_psf(star[None], (1.5, 1.5), native_fwhm=1.8, seed=0)
    assert np.array_equal(out[0], star)
    with pytest.raises(ValueError):
        broaden_psf(star[None], (2.7, 2.0), native_fwhm=1.8, seed=0)
