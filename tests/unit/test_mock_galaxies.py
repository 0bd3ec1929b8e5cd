"""GalSim mock-galaxy helpers: flux, centring, orientation, PSF, noise level and seeding."""
from __future__ import annotations

import numpy as np
import pytest

from training import mock_galaxies as mg


def _moments(img: np.ndarray) -> tuple[float, float, float, float, float]:
    """Centroid (x, y) and second moments (xx, yy, xy) of a non-negative image, x = columns."""
    y, x = np.indices(img.shape, dtype=np.float64)
    w = np.clip(img.astype(np.float64), 0, None)
    s = w.sum()
    cx, cy = (w * x).sum() / s, (w * y).sum() / s
    return (cx, cy, (w * (x - cx) ** 2).sum() / s, (w * (y - cy) ** 2).sum() / s,
            (w * (x - cx) * (y - cy)).sum() / s)


@pytest.mark.parametrize("size", [64, 65])
def test_flux_dtype_and_centre(size):
    img = mg.draw_sersic(size, 0.1, n=1.5, half_light_radius=0.4, flux=100.0, psf_fwhm=0.15)
    assert img.dtype == np.float32 and img.shape == (size, size)
    assert img.sum() == pytest.approx(100.0, rel=0.02)
    cx, cy, *_ = _moments(img)
    centre = (size - 1) / 2
    assert cx == pytest.approx(centre, abs=0.05) and cy == pytest.approx(centre, abs=0.05)


def test_ellipticity_and_position_angle_orientation():
    along_x = mg.draw_sersic(65, 0.1, n=1.0, half_light_radius=0.6, ellipticity=0.6, position_angle=0.0)
    _, _, xx, yy, _ = _moments(along_x)
    assert xx > 3 * yy
    along_y = mg.draw_sersic(65, 0.1, n=1.0, half_light_radius=0.6, ellipticity=0.6, position_angle=90.0)
    _, _, xx, yy, _ = _moments(along_y)
    assert yy > 3 * xx
    diagonal = mg.draw_sersic(65, 0.1, n=1.0, half_light_radius=0.6, ellipticity=0.6, position_angle=45.0)
    assert _moments(diagonal)[4] > 0          # +x +y correlated: major axis along the x = y diagonal


def test_psf_broadens_and_offset_moves_centroid():
    sharp = mg.draw_sersic(65, 0.1, n=1.0, half_light_radius=0.3)
    blurred = mg.draw_sersic(65, 0.1, n=1.0, half_light_radius=0.3, psf_fwhm=0.8, psf_kind="moffat")
    assert _moments(blurred)[2] > 1.5 * _moments(sharp)[2]
    shifted = mg.draw_sersic(65, 0.1, n=1.0, half_light_radius=0.3, offset=(1.0, -0.5))
    cx, cy, *_ = _moments(shifted)
    assert cx == pytest.approx(32 + 10, abs=0.1) and cy == pytest.approx(32 - 5, abs=0.1)


def test_noise_sigma_snr_and_seeding():
    clean = mg.draw_sersic(64, 0.1, n=1.0, half_light_radius=0.4, flux=50.0)
    noisy = mg.add_noise(clean, np.random.default_rng(1), sigma=0.2)
    assert np.std(noisy - clean) == pytest.approx(0.2, rel=0.05)
    again = mg.add_noise(clean, np.random.default_rng(1), sigma=0.2)
    other = mg.add_noise(clean, np.random.default_rng(2), sigma=0.2)
    np.testing.assert_array_equal(noisy, again)
    assert not np.array_equal(noisy, other)
    sigma = mg.noise_sigma_for_snr(clean, 20.0)
    assert np.sqrt((clean.astype(np.float64) ** 2).sum()) / sigma == pytest.approx(20.0)
    by_snr = mg.add_noise(clean, np.random.default_rng(3), snr=20.0)
    assert np.std(by_snr - clean) == pytest.approx(sigma, rel=0.05)
    assert clean.dtype == np.float32 and by_snr.dtype == np.float32
    with pytest.raises(ValueError):
        mg.add_noise(clean, np.random.default_rng(0), sigma=1.0, snr=5.0)
    with pytest.raises(ValueError):
        mg.draw_sersic(32, 0.1, n=1.0, half_light_radius=0.3, snr=10.0)   # noise without an rng


def test_bulge_disk_tail_and_shell():
    bd = mg.draw(mg.bulge_disk(10.0, 0.3, 0.2, 0.8, disk_ellipticity=0.5), 101, 0.05)
    bulge_only = mg.draw(mg.bulge_disk(10.0, 1.0, 0.2, 0.8), 101, 0.05)
    assert bd.sum() == pytest.approx(10.0, rel=0.06)   # n=4 wings beyond the 5" stamp hold ~4%
    assert bulge_only.max() > bd.max()        # a pure bulge is more concentrated than B/T = 0.3
    tail = mg.draw(mg.tidal_tail((0.5, 0.0), 0.0, 2.0, 60.0, flux=3.0), 101, 0.05)
    cx, cy, *_ = _moments(tail)
    assert tail.sum() == pytest.approx(3.0, rel=0.05)
    assert cx > 50 + 15 and cy > 50              # heads along +x, curving towards +y
    arc = mg.draw(mg.shell(1.5, 90.0, 60.0, flux=2.0), 101, 0.05)
    assert arc[50, 50] < 1e-4 * arc.max()         # hollow centre
    assert _moments(arc)[1] > 50 + 20             # the arc sits above the centre (+y)
    with pytest.raises(ValueError):
        mg.sersic(1.0, -1.0)
    with pytest.raises(ValueError):
        mg.make_psf(0.5, kind="airy")
    with pytest.raises(ValueError):
        mg.sersic(1.0, 0.5, ellipticity=1.0)


def test_spiked_psf_point_source_and_truncation():
    plain = mg.draw(mg.point_source(1.0), 65, 0.05, mg.make_psf(0.2, "moffat"))
    spiked = mg.draw(mg.point_source(1.0), 65, 0.05, mg.make_psf(0.2, "moffat", spikes=0.1, spike_angle=0.0))
    assert spiked.sum() == pytest.approx(plain.sum(), rel=0.01)
    assert plain[32, 32 + 12] == pytest.approx(plain[32 + 12, 32], rel=1e-3)   # a round core
    # spikes along x and y: 12 px out along +x the spiked PSF is brighter than along the diagonal (~12 px)
    assert spiked[32, 32 + 12] > 3 * spiked[32 + 8, 32 + 8] and spiked[32, 32 + 12] > plain[32, 32 + 12]
    with pytest.raises(ValueError):
        mg.make_psf(0.2, spikes=1.0)
    full = mg.draw(mg.sersic(4.0, 0.5, flux=10.0), 101, 0.05)
    cut = mg.draw(mg.sersic(4.0, 0.5, flux=10.0, trunc=1.0), 101, 0.05)
    assert cut[50, 50] == pytest.approx(full[50, 50], rel=0.01)      # the inner profile is kept
    assert cut[50, 50 + 30] < 1e-3 * full[50, 50 + 30]                 # nothing beyond 1" (20 px)
    assert cut.sum() < full.sum() < 10.0


def test_knots_and_spiral_arms():
    _, _, xx, yy, _ = _moments(mg.draw(mg.knot(0.08, 1.0, length=0.5, angle=90.0), 65, 0.05))
    assert yy > 3 * xx                            # stretched along +y
    arms = mg.draw(mg.spiral_arms(0.4, 2, np.radians(20.0), 0.0, 2.0), 101, 0.05)
    assert arms.sum() == pytest.approx(2.0, rel=0.05)
    np.testing.assert_allclose(arms, arms[::-1, ::-1], atol=1e-4 * arms.max())   # two arms: 180-degree symmetric
    assert arms[50, 50] < 0.1 * arms.max()        # the arms start away from the centre
    tilted = mg.draw(mg.spiral_arms(0.4, 2, np.radians(20.0), 0.0, 2.0, axis_ratio=0.4, position_angle=0.0),
                     101, 0.05)
    _, _, xx, yy, _ = _moments(tilted)
    assert xx > 2 * yy                            # an inclined disk's arms are squashed along the minor axis
    with pytest.raises(ValueError):
        mg.spiral_arms(0.4, 0, 0.3, 0.0, 1.0)


def test_correlated_noise_keeps_sigma_and_correlates_neighbours():
    kernel = np.array([[0.05, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.05]])
    noise = mg.correlated_noise((300, 300), np.random.default_rng(4), 0.5, kernel)
    assert noise.std() == pytest.approx(0.5, rel=0.03)
    corr = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
    assert corr == pytest.approx(0.1 / 0.21, abs=0.03)   # sum(K * K shifted by one) / sum(K^2)
    np.testing.assert_array_equal(noise, mg.correlated_noise((300, 300), np.random.default_rng(4), 0.5, kernel))
