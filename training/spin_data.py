"""SDSS spin data: RGB stamps (JPEG/PNG) + a CSV catalogue of lambda_R, GalSim mocks in that layout, replay.

Layout read by `read_spin_dir` (what sdss_CNN works from: SkyServer colour cutouts plus MaNGA kinematics):

* a directory with one catalogue ``*.csv`` (or ``--set catalogue=FILE``) and the images beside it or in an
  ``images/`` subdirectory;
* the catalogue's image column, matched case-insensitively, one of ``filename``, ``file``, ``image``, ``path``
  (a path relative to the catalogue), or an ID column, one of ``id``, ``plateifu``, ``mangaid``, ``objid``,
  ``name`` (the image is ``<id>.jpg``, ``.jpeg`` or ``.png``);
* the target column: any header that, lower-cased with non-letters removed, reads ``lambdar``
  (lambda_R, lambda_r, LambdaR), ``lambdare`` (lambda_Re, lambda_R_e) or ``spin``;
* rows with an empty or non-numeric lambda_R are skipped and counted; a missing image is an error.

Images are 8-bit RGB; SDSS colour images map i, r, g to R, G, B (Lupton et al. 2004), so channel 0 is "i".
They are kept as 0..255 floats: the model's recipe scales by 1/255, in training and serving alike.

Mocks (`write_mock_spin_set`): bulge (de Vaucouleurs) + disc (exponential, intrinsic thickness q0) galaxies in
g, r, i with redder bulges and bluer discs, a Gaussian PSF and sky noise, combined with astropy's Lupton asinh
RGB and saved as JPEG (or PNG). Stamps span 8.48 R_e like sdss_CNN's. The mock lambda_R is a made-up function
of what the image shows -- NOT a dynamical model:

    lambda_int = 0.08 + 0.62 * (1 - B/T) ** 1.3          (disc-dominated rotate, spheroids do not)
    lambda_R   = lambda_int * (0.2 + 0.8 * sin i) + N(0, 0.03), clipped to [0.01, 0.85]

so flattened, inclined, disc-dominated (bluer) galaxies get high lambda_R and round bulge-dominated (redder) ones
low, with scatter. It exercises formats and the pipeline; accuracy on it says nothing about MaNGA.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from models.spin import CHANNELS
from schemas.errors import StampflowError

IMAGE_COLUMNS = ("filename", "file", "image", "path")
ID_COLUMNS = ("id", "plateifu", "mangaid", "objid", "name")
TARGET_KEYS = ("lambdar", "lambdare", "spin")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CATALOGUE_NAME = "lambda_R.csv"


def _norm(header: str) -> str:
    return re.sub(r"[^a-z]", "", header.lower())


@dataclass
class SpinSet:
    """Images (as loaded, each (H, W, 3) uint8, sizes may differ), targets and where they came from."""

    images: list[np.ndarray]
    targets: np.ndarray          # (N,) float64 lambda_R
    ids: list[str]
    files: list[Path]
    catalogue: Path
    columns: dict[str, str]      # {"image"|"id": header, "target": header}
    skipped: int = 0
    mock: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def find_catalogue(path: Path, catalogue: str | None = None) -> Path:
    if catalogue:
        p = Path(catalogue)
        p = p if p.is_absolute() or p.exists() else path / p
        if not p.is_file():
            raise StampflowError(f"spin catalogue {p} does not exist")
        return p
    if path.is_file() and path.suffix.lower() == ".csv":
        return path
    if not path.is_dir():
        raise StampflowError(f"spin data {path} does not exist")
    found = sorted(path.glob("*.csv"))
    if len(found) != 1:
        what = "no" if not found else "several"
        raise StampflowError(f"{what} CSV catalogue in {path}; name one with --set catalogue=FILE")
    return found[0]


def _columns(header: Sequence[str], where: Path) -> tuple[str, str, str]:
    """(kind "image"|"id", image/id header, target header) from a CSV header row."""
    lower = {h.strip().lower(): h for h in header}
    target = [h for h in header if _norm(h) in TARGET_KEYS]
    if not target:
        raise StampflowError(f"{where}: no lambda_R column (headers: {', '.join(header)}; accepted: lambda_R, "
                             "lambda_Re, spin and case/underscore variants)")
    for name in IMAGE_COLUMNS:
        if name in lower:
            return "image", lower[name], target[0]
    for name in ID_COLUMNS:
        if name in lower:
            return "id", lower[name], target[0]
    raise StampflowError(f"{where}: no image or ID column (headers: {', '.join(header)}; accepted: "
                         f"{', '.join(IMAGE_COLUMNS + ID_COLUMNS)})")


def _image_for_id(root: Path, ident: str) -> Path | None:
    for folder in (root, root / "images"):
        for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
            p = folder / f"{ident}{suffix}"
            if p.is_file():
                return p
    return None


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (grey or RGBA converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise StampflowError(f"spin image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise StampflowError(f"cannot read image {path}: {exc}") from None


def read_catalogue(path: str | Path, catalogue: str | None = None) -> tuple[list[dict[str, Any]], dict[str, str],
                                                                             Path, int]:
    """Rows {"id", "file", "lambda_R"} of the catalogue, the columns used, its path and rows skipped."""
    path = Path(path)
    cat = find_catalogue(path, catalogue)
    root = cat.parent
    with open(cat, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise StampflowError(f"{cat} is empty") from None
        kind, key_col, target_col = _columns(header, cat)
        ki, ti = header.index(key_col), header.index(target_col)
        rows, skipped = [], 0
        for line in reader:
            if not line or all(not c.strip() for c in line):
                continue
            try:
                value = float(line[ti])
            except (ValueError, IndexError):
                skipped += 1
                continue
            if not math.isfinite(value):
                skipped += 1
                continue
            key = line[ki].strip()
            if kind == "image":
                f = (root / key) if not Path(key).is_absolute() else Path(key)
                ident = Path(key).stem
            else:
                f = _image_for_id(root, key)
                ident = key
                if f is None:
                    raise StampflowError(f"{cat}: no image {key}.jpg/.jpeg/.png in {root} or {root / 'images'}")
            rows.append({"id": ident, "file": f, "lambda_R": value})
    if not rows:
        raise StampflowError(f"{cat}: no rows with a numeric {target_col}")
    return rows, {kind: key_col, "target": target_col}, cat, skipped


def read_spin_dir(path: str | Path, catalogue: str | None = None, limit: int | None = None) -> SpinSet:
    """The catalogue and its images (see module docstring)."""
    rows, cols, cat, skipped = read_catalogue(path, catalogue)
    if limit:
        rows = rows[:int(limit)]
    images = [read_rgb(r["file"]) for r in rows]
    mock = None
    desc = cat.parent / "mock_description.json"
    if desc.is_file():
        mock = json.loads(desc.read_text())
    return SpinSet(images=images, targets=np.array([r["lambda_R"] for r in rows], dtype=np.float64),
                   ids=[r["id"] for r in rows], files=[r["file"] for r in rows], catalogue=cat, columns=cols,
                   skipped=skipped, mock=mock)


def stack_resized(images: Sequence[np.ndarray], spec) -> np.ndarray:
    """(H, W, 3) uint8 images of any sizes -> (N, size, size, 3) float32 0..255 through the serving geometry."""
    from models.preprocess import prepare_images

    out = np.empty((len(images), spec.size, spec.size, 3), dtype=np.float32)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(img.shape, []).append(i)
    for idx in by_shape.values():
        out[idx] = prepare_images(np.stack([images[i] for i in idx]).astype(np.float32), spec)
    return out


# ------------------------------------------------------------------------------------------------ mocks


@dataclass(frozen=True)
class SpinMockParams:
    """Mock SDSS-like stamps (all lengths in units of the galaxy's half-light radius R_e)."""

    size: int = 120                      # pixels across; the stamp spans `extent` R_e like sdss_CNN's cut-outs
    extent: float = 8.48
    psf_fwhm_re: tuple[float, float] = (0.15, 0.6)   # SDSS seeing ~1.4" over R_e of ~2-10"
    disc_q0: float = 0.2                 # intrinsic disc thickness (edge-on axis ratio)
    bulge_hlr_ratio: tuple[float, float] = (0.2, 0.5)  # bulge R_e / disc R_e
    snr: tuple[float, float] = (150.0, 1000.0)   # r-band matched-filter S/N, log-uniform (SDSS MaNGA targets are bright)
    bulge_colour: tuple[float, float, float] = (0.45, 1.0, 1.35)  # g, r, i flux relative to r (red)
    disc_colour: tuple[float, float, float] = (0.95, 1.0, 0.95)    # bluer
    slow_rotator_fraction: float = 0.15  # pure spheroids
    lambda_scatter: float = 0.03
    rgb_stretch: float = 0.5             # astropy make_lupton_rgb stretch, in units of the image peak / 10
    rgb_q: float = 8.0
    jpeg_quality: int = 92

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mock_lambda_r(bulge_fraction: float, sin_i: float, rng: np.random.Generator, p: SpinMockParams) -> float:
    """The documented mock mapping from B/T and inclination to lambda_R (module docstring)."""
    lam = (0.08 + 0.62 * (1.0 - bulge_fraction) ** 1.3) * (0.2 + 0.8 * sin_i) + rng.normal(0, p.lambda_scatter)
    return float(np.clip(lam, 0.01, 0.85))


def mock_galaxy(rng: np.random.Generator, p: SpinMockParams = SpinMockParams()) -> dict[str, Any]:
    """A random bulge + disc galaxy, its inclination and its mock lambda_R (JSON-able)."""
    bt = 1.0 if rng.random() < p.slow_rotator_fraction else float(rng.beta(1.2, 2.0))
    cos_i = float(rng.uniform(0, 1))
    sin_i = math.sqrt(1 - cos_i ** 2)
    q = math.sqrt(cos_i ** 2 * (1 - p.disc_q0 ** 2) + p.disc_q0 ** 2)   # projected thin-disc axis ratio
    return {"bulge_fraction": bt, "sin_i": sin_i, "disc_ellipticity": 1 - q,
            "bulge_ellipticity": float(0.3 * (1 - q) + rng.uniform(0, 0.1)),
            "bulge_hlr_ratio": float(rng.uniform(*p.bulge_hlr_ratio)), "position_angle": float(rng.uniform(0, 180)),
            "psf_fwhm_re": float(rng.uniform(*p.psf_fwhm_re)),
            "snr": float(np.exp(rng.uniform(*np.log(p.snr)))),
            "lambda_R": mock_lambda_r(bt, sin_i, rng, p)}


def render_rgb(g: dict[str, Any], rng: np.random.Generator, p: SpinMockParams = SpinMockParams()) -> np.ndarray:
    """The galaxy in g, r, i with PSF and noise, as an SDSS-style (H, W, 3) uint8 colour image (R=i, G=r, B=g)."""
    from astropy.visualization import make_lupton_rgb

    from training import mock_galaxies as mg

    scale = p.extent / p.size  # R_e per pixel; the galaxy's half-light radius is 1 in these units
    psf = mg.make_psf(g["psf_fwhm_re"], "moffat", beta=3.0)
    # the disc's hlr is set so that bulge+disc has R_e ~ 1 whatever B/T (bulges are more compact)
    disc_hlr = 1.0 / (1 - g["bulge_fraction"] * (1 - g["bulge_hlr_ratio"])) if g["bulge_fraction"] < 1 else 1.0
    bulge_hlr = disc_hlr * g["bulge_hlr_ratio"] if g["bulge_fraction"] < 1 else 1.0
    clean = {}
    for k, band in enumerate(("g", "r", "i")):
        fb, fd = p.bulge_colour[k] * g["bulge_fraction"], p.disc_colour[k] * (1 - g["bulge_fraction"])
        total = fb + fd
        prof = mg.bulge_disk(100.0 * total, fb / total, bulge_hlr, disc_hlr, disk_ellipticity=g["disc_ellipticity"],
                             bulge_ellipticity=g["bulge_ellipticity"], position_angle=g["position_angle"])
        clean[band] = mg.draw(prof, p.size, scale, psf)
    # one sky sigma for all bands, set by the r-band S/N
    sigma = mg.noise_sigma_for_snr(clean["r"], g["snr"])
    bands = {band: mg.add_noise(img, rng, sigma=sigma) for band, img in clean.items()}
    peak = max(float(np.percentile(bands["r"], 99.9)), 1e-6)
    rgb = make_lupton_rgb(bands["i"], bands["r"], bands["g"], minimum=0.0, stretch=p.rgb_stretch * peak / 10,
                          Q=p.rgb_q)
    return np.asarray(rgb, dtype=np.uint8)


def write_mock_spin_set(out_dir: str | Path, n: int, seed: int = 0, params: SpinMockParams = SpinMockParams(),
                        image_format: str = "jpg", id_column: str = "filename", progress: bool = False) -> dict:
    """Write ``n`` mock stamps and ``lambda_R.csv`` (columns ``<id_column>,lambda_R``) into ``out_dir``.

    ``id_column`` "filename" writes file names; "plateifu" (or another ID column) writes bare IDs so the reader
    finds ``<id>.<ext>`` itself. Returns the mock description (also written to mock_description.json).
    """
    from PIL import Image
    from tqdm.auto import tqdm

    if image_format not in ("jpg", "png"):
        raise StampflowError(f"image format {image_format}: jpg or png")
    if n < 1:
        raise StampflowError("write at least one mock stamp")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, gals = [], []
    for k in tqdm(range(n), desc="spin mocks", unit="img", disable=not progress):
        gal = mock_galaxy(rng, params)
        rgb = render_rgb(gal, rng, params)
        ident = f"mock-{k:05d}"
        fname = f"images/{ident}.{image_format}"
        im = Image.fromarray(rgb, "RGB")
        if image_format == "jpg":
            im.save(out / fname, quality=params.jpeg_quality)
        else:
            im.save(out / fname)
        rows.append((fname if id_column == "filename" else ident, f"{gal['lambda_R']:.5f}"))
        gals.append(gal)
    with open(out / CATALOGUE_NAME, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([id_column, "lambda_R"])
        w.writerows(rows)
    lam = np.array([g["lambda_R"] for g in gals])
    desc = {"generator": "training.spin_data.write_mock_spin_set (GalSim)", "seed": int(seed), "n": int(n),
            "image_format": image_format, "id_column": id_column, "params": params.as_dict(),
            "lambda_R_mapping": "lambda_R = (0.08 + 0.62 (1 - B/T)^1.3) (0.2 + 0.8 sin i) + N(0, "
                                f"{params.lambda_scatter}), clipped to [0.01, 0.85]",
            "lambda_R_stats": {"mean": float(lam.mean()), "std": float(lam.std()), "min": float(lam.min()),
                               "max": float(lam.max())}}
    (out / "mock_description.json").write_text(json.dumps(desc, indent=2))
    return desc


# ---------------------------------------------------------------------------------------------- replay


def iter_spin_cutouts(path: str | Path, **options: Any) -> Iterator:
    """One `Cutout` per catalogue row: survey SDSS, bands i, r, g (the image's R, G, B) as 0..255 float32,
    pixel scale None (stamps are cut at a multiple of R_e), truth {"lambda_R": value}.

    Options: ``catalogue`` (CSV file), ``limit``, ``split`` (tag).
    """
    from schemas.cutout_packet import Cutout

    rows, _, cat, _ = read_catalogue(Path(path), options.get("catalogue"))
    limit = options.get("limit")
    if limit not in (None, ""):
        rows = rows[:int(limit)]
    mock = (cat.parent / "mock_description.json").is_file()
    for r in rows:
        rgb = read_rgb(r["file"]).astype(np.float32)
        yield Cutout(id=r["id"], survey="SDSS", instrument="SDSS imaging (colour JPEG)", bands=list(CHANNELS),
                     images={b: np.ascontiguousarray(rgb[:, :, k]) for k, b in enumerate(CHANNELS)},
                     pixel_scale=None, truth_values={"lambda_R": float(r["lambda_R"])},
                     truth_source=("mock " if mock else "") + f"{cat.name}",
                     dataset="sdss-spin-mock" if mock else "sdss-spin", split=options.get("split"),
                     extra={"file": str(Path(r["file"]).name)})


iter_cutouts = iter_spin_cutouts
