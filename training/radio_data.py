"""Readers for the published radio-galaxy data sets, and archival cutout streams for ``stampflow replay``.

Formats (all real data, see docs/radio.md):

* Griese et al. (2023) FIRST data set (``griese``): one HDF5 file, one group per image with ``Img`` (300x300
  uint8), ``Label_literature`` (FRI=0, FRII=1, Compact=2, Bent=3), ``Split_literature`` (train/valid/test) and
  the alternative ``Label_CDL1``/``Split_CDL1``. Read from a ``.h5`` or straight from a ``.zip`` (the member is
  inflated into memory, not onto disk: h5py reads file-like objects, but seeking inside a deflated zip member
  re-inflates from the start, which makes h5py's random access ~10x slower). The groups carry no coordinates.
* FR-DEEP (Tang, Scaife & Leahy 2019) (``frdeep``): FIRST and NVSS images of the same 600 FRI/FRII sources, 150x150
  uint8, CIFAR-style pickled batches (11 training batches + 1 test batch of 50) in ``FIRST_PNG_dataset.tar.gz``
  and ``NVSS_PNG_dataset.tar.gz`` (despite the names: pickles, no PNGs). Pixel scales: FIRST 1.8"/px and NVSS
  15"/px (the data set's README: "FRDEEP-N: 15''/pixel"), i.e. the NVSS images span 37.5' and the sources sit
  small in the middle among field sources. The two subsets are shuffled independently: batch positions and
  file names do not pair FIRST with NVSS images of the same source.
* MiraBest (Porter & Scaife) batches (``mirabest``): 792 confident FRI (code 100) / FRII (200) sources, 150x150
  uint8 FIRST images (1.8"/px), 8 training + 1 test CIFAR-style batches; the file names carry the class code
  and RA/Dec (``BestCat_proc/Cropped/100_159.613_+041.815.png``).
* FITS images (``radio-fits``): e.g. the MiraBest FITS subset (300x300 FIRST cutouts named
  ``{code}_{ra}_{dec}_{z}_{size}.fits``) or any survey image with a WCS: the whole image as one cutout, or
  stamps around a coordinate list (`training.survey_cutouts`).

Pickled batches are only ever read through `training.safe_unpickle` (numpy arrays and plain containers).
"""
from __future__ import annotations

import io
import re
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from schemas.errors import StampflowError
from training.safe_unpickle import load_cifar_batch

GRIESE_CLASSES = ("FRI", "FRII", "Compact", "Bent")
FR_CLASSES = ("FRI", "FRII")
MIRABEST_FITS_CLASSES = ("FRI", "FRII", "Hybrid")
FIRST_PIXEL_SCALE = 1.8   # arcsec/px (FIRST survey grid; Griese, FR-DEEP FIRST, MiraBest)
NVSS_PIXEL_SCALE = 15.0   # arcsec/px (FR-DEEP NVSS, as published)
BAND = "1.4GHz"
SURVEY_PIXEL_SCALE = {"FIRST": FIRST_PIXEL_SCALE, "NVSS": NVSS_PIXEL_SCALE}
DATASETS = ("griese", "frdeep-first", "frdeep-nvss", "mirabest", "mirabest-fits", "radio-fits")
# Inflating a zipped HDF5 into memory up to this size; larger members go to a temporary file that is removed.
_MAX_IN_MEMORY = 1 << 30


@dataclass
class RadioSet:
    """Images and labels of one radio data set (one survey, one pixel scale)."""

    images: np.ndarray            # (N, H, W), uint8 as published (float32 for FITS)
    labels: np.ndarray            # (N,) int index into ``classes``
    classes: tuple[str, ...]
    splits: np.ndarray            # (N,) str: train / valid / test
    ids: list[str]
    survey: str
    pixel_scale: float
    dataset: str
    source: str
    ra: np.ndarray | None = None  # (N,) deg, NaN where unknown; None when the data set has no coordinates
    dec: np.ndarray | None = None
    extra: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray | Sequence[int]) -> "RadioSet":
        idx = np.asarray(idx, dtype=int)
        return RadioSet(images=self.images[idx], labels=self.labels[idx], classes=self.classes,
                        splits=self.splits[idx], ids=[self.ids[i] for i in idx], survey=self.survey,
                        pixel_scale=self.pixel_scale, dataset=self.dataset, source=self.source,
                        ra=None if self.ra is None else self.ra[idx], dec=None if self.dec is None else self.dec[idx],
                        extra=[self.extra[i] for i in idx] if self.extra else [])

    def select(self, split: str | Sequence[str] | None) -> "RadioSet":
        """Keep the given split(s) (``all``/None keeps everything); unknown names raise `StampflowError`."""
        wanted = parse_splits(split)
        if wanted is None:
            return self
        have = sorted(set(self.splits.tolist()))
        missing = [s for s in wanted if s not in have]
        if missing:
            raise StampflowError(f"{self.source} has no '{', '.join(missing)}' split (it has: {', '.join(have)})")
        return self.subset(np.flatnonzero(np.isin(self.splits, wanted)))

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for s in sorted(set(self.splits.tolist())):
            m = self.splits == s
            out[s] = {c: int(((self.labels == i) & m).sum()) for i, c in enumerate(self.classes)}
        return out


def parse_splits(split: str | Sequence[str] | None) -> list[str] | None:
    if split is None:
        return None
    items = [s.strip() for s in (split.split(",") if isinstance(split, str) else split) if s and s.strip()]
    if not items or "all" in items:
        return None
    return items


def _path(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise StampflowError(f"{what} {p} does not exist")
    return p


# ------------------------------------------------------------------------------------------- Griese HDF5


def _open_griese_bytes(path: Path):
    """Context manager yielding an h5py.File for a .h5 or a zipped .h5 (first .h5/.hdf5 member)."""
    import contextlib

    import h5py

    @contextlib.contextmanager
    def opener():
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                members = [i for i in zf.infolist() if i.filename.lower().endswith((".h5", ".hdf5"))]
                if not members:
                    raise StampflowError(f"{path} holds no .h5/.hdf5 file")
                info = members[0]
                if info.compress_type == zipfile.ZIP_STORED:
                    # Seeking in a stored member is cheap: let h5py read it in place.
                    with zf.open(info) as fh, h5py.File(fh, "r") as h5:
                        yield h5
                elif info.file_size <= _MAX_IN_MEMORY:
                    with h5py.File(io.BytesIO(zf.read(info)), "r") as h5:
                        yield h5
                else:
                    with tempfile.TemporaryDirectory(prefix="stampflow-griese-") as tmp:
                        target = Path(tmp) / "data.h5"
                        with zf.open(info) as src, open(target, "wb") as dst:
                            while chunk := src.read(1 << 24):
                                dst.write(chunk)
                        with h5py.File(target, "r") as h5:
                            yield h5
        else:
            with h5py.File(path, "r") as h5:
                yield h5

    return opener()


def _scalar_text(v: Any) -> str:
    if isinstance(v, np.ndarray):
        v = v.item() if v.size == 1 else v.tolist()
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v).decode("utf-8", errors="replace")
    return str(v)


def _group_order(name: str) -> tuple:
    m = re.search(r"(\d+)$", name)
    return (name[: m.start()] if m else name, int(m.group(1)) if m else -1)


def load_griese(path: str | Path, split: str | Sequence[str] | None = None, labels: str = "literature",
                limit: int | None = None) -> RadioSet:
    """Read a Griese-format HDF5 (zipped or not).

    ``split``: ``train``/``valid``/``test``/``all`` or a comma list; a split absent from the file raises.
    ``labels``: ``literature`` (``Label_literature``/``Split_literature``, the published split) or ``CDL1``.
    ``limit``: read only the first ``limit`` groups (numeric order): for quick looks and tests.
    """
    import h5py

    p = _path(path, "Griese HDF5 file")
    if p.is_dir():
        hit = _find_file(p, ["*.h5", "*.hdf5", "galaxy_data*.zip", "*.zip"])
        if hit is None:
            raise StampflowError(f"no Griese HDF5 (.h5, .hdf5 or .zip) in {p}")
        p = hit
    if labels not in ("literature", "CDL1"):
        raise StampflowError(f"unknown Griese label set '{labels}' (literature or CDL1)")
    label_key, split_key = f"Label_{labels}", f"Split_{labels}"
    wanted = parse_splits(split)
    imgs, labs, spl, ids = [], [], [], []
    try:
        with _open_griese_bytes(p) as h5:
            names = sorted((k for k in h5.keys() if isinstance(h5[k], h5py.Group)), key=_group_order)
            if not names:
                raise StampflowError(f"{p} is not a Griese-format HDF5 file (no groups)")
            seen_splits: set[str] = set()
            for name in names:
                if limit is not None and len(ids) >= limit:
                    break
                g = h5[name]
                missing = [k for k in ("Img", label_key, split_key) if k not in g]
                if missing:
                    raise StampflowError(f"{p} is not a Griese-format HDF5 file: group {name} lacks "
                                         f"{', '.join(missing)}")
                s = _scalar_text(g[split_key][()])
                seen_splits.add(s)
                if wanted is not None and s not in wanted:
                    continue
                img = np.asarray(g["Img"][()])
                if img.ndim != 2:
                    raise StampflowError(f"{p}: image {name} is not 2-D (shape {img.shape})")
                lab = float(np.asarray(g[label_key][()]))
                if not (lab.is_integer() and 0 <= lab < len(GRIESE_CLASSES)):
                    raise StampflowError(f"{p}: image {name} has label {lab}, expected 0..3")
                imgs.append(img)
                labs.append(int(lab))
                spl.append(s)
                ids.append(name)
    except StampflowError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise StampflowError(f"cannot read {p} as a Griese-format HDF5 file: {exc}") from None
    if wanted is not None and limit is None:
        missing = [s for s in wanted if s not in seen_splits]
        if missing:
            raise StampflowError(f"{p} has no '{', '.join(missing)}' split (it has: {', '.join(sorted(seen_splits))})")
    if not ids:
        raise StampflowError(f"no images selected from {p} (split {split!r})")
    shapes = {i.shape for i in imgs}
    if len(shapes) != 1:
        raise StampflowError(f"{p}: images of different shapes {sorted(shapes)}")
    return RadioSet(images=np.stack(imgs), labels=np.array(labs, dtype=int), classes=GRIESE_CLASSES,
                    splits=np.array(spl), ids=ids, survey="FIRST", pixel_scale=FIRST_PIXEL_SCALE,
                    dataset="griese", source=str(p), extra=[{"group": i, "label_set": labels} for i in ids])


def write_griese_h5(path: str | Path, images: np.ndarray, labels: Sequence[int], splits: Sequence[str],
                    zipped: bool = False) -> Path:
    """Write images in the Griese layout (one group ``data_N`` per image) -- for tests and small extracts.

    With ``zipped`` the HDF5 is written into ``path`` as a deflated zip member named like the published file.
    """
    import h5py

    p = Path(path)
    target = p.with_suffix(".h5") if zipped else p
    with h5py.File(target, "w") as h5:
        for i, (img, lab, s) in enumerate(zip(images, labels, splits)):
            g = h5.create_group(f"data_{i}")
            g.create_dataset("Img", data=np.asarray(img, dtype=np.uint8))
            g.create_dataset("Label_literature", data=float(lab))
            g.create_dataset("Split_literature", data=s.encode(), dtype=h5py.string_dtype("ascii"))
            g.create_dataset("Label_CDL1", data=float(lab))
            g.create_dataset("Split_CDL1", data=s.encode(), dtype=h5py.string_dtype("ascii"))
    if zipped:
        with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(target, arcname=target.name)
        target.unlink()
        return p
    return target


# ---------------------------------------------------------------------------------- CIFAR-style batches


_BATCH_RE = re.compile(r"(?:^|/)(data_batch_(\d+)|test_batch)$")


def _batch_members(path: Path) -> list[tuple[str, bytes]]:
    """(member name, bytes) of every ``data_batch_N``/``test_batch`` in a tarball or directory, in order."""
    found: list[tuple[str, bytes]] = []
    if path.is_dir():
        for f in path.rglob("*"):
            if f.is_file() and _BATCH_RE.search(f.as_posix()) and ".ipynb_checkpoints" not in f.parts:
                found.append((f.relative_to(path).as_posix(), f.read_bytes()))
    else:
        try:
            with tarfile.open(path, "r:*") as tf:
                for m in tf.getmembers():
                    if m.isfile() and _BATCH_RE.search(m.name) and ".ipynb_checkpoints" not in m.name:
                        fh = tf.extractfile(m)
                        if fh is not None:
                            found.append((m.name, fh.read()))
        except (tarfile.TarError, OSError) as exc:
            raise StampflowError(f"cannot read {path} as a tar archive of batches: {exc}") from None
    if not found:
        raise StampflowError(f"no data_batch_N / test_batch files in {path}")

    def order(item):
        m = _BATCH_RE.search(item[0])
        return (1, 0) if m.group(1) == "test_batch" else (0, int(m.group(2)))

    return sorted(found, key=order)


def _read_batches(path: Path, image_size: int = 150) -> tuple[np.ndarray, np.ndarray, list[str], list[str], list[str]]:
    imgs, labs, names, splits, members = [], [], [], [], []
    for member, raw in _batch_members(path):
        batch = load_cifar_batch(raw, source=f"{path}:{member}")
        data = batch["data"]
        arr = np.stack([np.asarray(d) for d in data]) if isinstance(data, list) else np.asarray(data)
        if arr.size != len(batch["labels"]) * image_size * image_size:
            raise StampflowError(f"{path}:{member}: images are not {image_size}x{image_size} "
                                 f"({arr.size} values for {len(batch['labels'])} images)")
        imgs.append(arr.reshape(-1, image_size, image_size))
        labs.extend(batch["labels"])
        names.extend(batch["filenames"])
        split = "test" if member.endswith("test_batch") else "train"
        splits.extend([split] * len(batch["labels"]))
        members.extend([member.rsplit("/", 1)[-1]] * len(batch["labels"]))
    return np.concatenate(imgs), np.array(labs, dtype=int), names, splits, members


def _find_file(directory: Path, patterns: Sequence[str]) -> Path | None:
    for pat in patterns:
        hits = sorted(directory.glob(pat))
        if hits:
            return hits[0]
    return None


def _frdeep_source(path: Path, survey: str | None) -> tuple[Path, str]:
    if path.is_dir():
        if any(_BATCH_RE.search(f.name) for f in path.iterdir() if f.is_file()):
            name = path.name.upper()
            inferred = "NVSS" if "NVSS" in name else "FIRST" if "FIRST" in name else None
            chosen = (survey or inferred or "").upper()
            if not chosen:
                raise StampflowError(f"cannot tell whether {path} holds FIRST or NVSS batches: pass survey=FIRST|NVSS")
            return path, chosen
        chosen = (survey or "FIRST").upper()
        hit = _find_file(path, [f"{chosen}_PNG_dataset.tar.gz", f"{chosen}*.tar.gz", f"{chosen}_PNG_dataset",
                                f"{chosen.lower()}*.tar.gz"])
        if hit is None:
            raise StampflowError(f"no FR-DEEP {chosen} data in {path} (expected {chosen}_PNG_dataset.tar.gz)")
        return _frdeep_source(hit, chosen)
    name = path.name.upper()
    inferred = "NVSS" if "NVSS" in name else "FIRST" if "FIRST" in name else None
    if survey and inferred and survey.upper() != inferred:
        raise StampflowError(f"{path} looks like FR-DEEP {inferred}, not {survey.upper()}")
    chosen = (survey or inferred or "").upper()
    if not chosen:
        raise StampflowError(f"cannot tell whether {path} holds FIRST or NVSS batches: pass survey=FIRST|NVSS")
    return path, chosen


def load_frdeep(path: str | Path, survey: str | None = None, split: str | Sequence[str] | None = None) -> RadioSet:
    """FR-DEEP FIRST or NVSS: a ``*_PNG_dataset.tar.gz``, an extracted batch directory, or the directory holding
    both tarballs (``survey`` picks one; default FIRST). Splits: ``train`` (11 batches), ``test`` (1 batch)."""
    src, chosen = _frdeep_source(_path(path, "FR-DEEP data"), survey)
    if chosen not in ("FIRST", "NVSS"):
        raise StampflowError(f"FR-DEEP survey must be FIRST or NVSS, not {chosen}")
    images, labels, names, splits, members = _read_batches(src)
    if labels.min() < 0 or labels.max() > 1:
        raise StampflowError(f"{src}: labels outside FRI=0/FRII=1")
    # File names repeat inside FR-DEEP FIRST (e.g. '37_example.png' is both an FRI and an FRII): key ids by
    # batch and position.
    ids = [f"frdeep-{chosen.lower()}/{m}/{i % 50:02d}/{n}" for i, (m, n) in enumerate(zip(members, names))]
    rs = RadioSet(images=images, labels=labels, classes=FR_CLASSES, splits=np.array(splits), ids=ids,
                  survey=chosen, pixel_scale=SURVEY_PIXEL_SCALE[chosen], dataset=f"frdeep-{chosen.lower()}",
                  source=str(src), extra=[{"file": n, "batch": m} for n, m in zip(names, members)])
    return rs.select(split)


_MIRABEST_NAME = re.compile(r"(\d{3})_(\d+(?:\.\d+)?)_([+-]\d+(?:\.\d+)?)")


def load_mirabest(path: str | Path, split: str | Sequence[str] | None = None) -> RadioSet:
    """MiraBest batches: ``batches.tar.gz``, an extracted ``batches/`` directory, or a directory holding either.
    RA/Dec and the MiraBest class code come from the file names."""
    p = _path(path, "MiraBest data")
    if p.is_dir() and not any(_BATCH_RE.search(f.name) for f in p.iterdir() if f.is_file()):
        hit = _find_file(p, ["batches.tar.gz", "batches", "*.tar.gz"])
        if hit is None:
            raise StampflowError(f"no MiraBest batches in {p} (expected batches.tar.gz)")
        p = hit
    images, labels, names, splits, members = _read_batches(p)
    ra = np.full(len(names), np.nan)
    dec = np.full(len(names), np.nan)
    extra = []
    for i, n in enumerate(names):
        m = _MIRABEST_NAME.search(n.rsplit("/", 1)[-1])
        info = {"file": n, "batch": members[i]}
        if m:
            info["mirabest_code"] = m.group(1)
            ra[i], dec[i] = float(m.group(2)), float(m.group(3))
            expected = {"1": 0, "2": 1}.get(m.group(1)[0])
            if expected is not None and expected != labels[i]:
                raise StampflowError(f"{p}: {n} has code {m.group(1)} but label {labels[i]}")
        extra.append(info)
    ids = [f"mirabest/{m}/{i % 88:02d}/{n.rsplit('/', 1)[-1]}" for i, (m, n) in enumerate(zip(members, names))]
    rs = RadioSet(images=images, labels=labels, classes=FR_CLASSES, splits=np.array(splits), ids=ids,
                  survey="FIRST", pixel_scale=FIRST_PIXEL_SCALE, dataset="mirabest", source=str(p),
                  ra=ra, dec=dec, extra=extra)
    return rs.select(split)


# ---------------------------------------------------------------------------------------- MiraBest FITS

_MIRABEST_FITS = re.compile(r"^(\d{3})_(\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)\.fits?$",
                            re.IGNORECASE)
_MORPHOLOGY = {"0": "standard", "1": "double-double", "2": "wide-angle tail", "3": "diffuse", "4": "head-tail"}


def parse_mirabest_fits_name(name: str) -> dict[str, Any] | None:
    """``200_235.328+051.679_0.1481_0031.15.fits`` -> code, class, confidence, morphology, ra, dec, z, size.

    MiraBest codes (Miraghaei & Best 2017): first digit 1 FRI, 2 FRII, 3 hybrid; second 0 confident, 1
    uncertain; third the morphology (0 standard, 1 double-double, 2 wide-angle tail, 3 diffuse, 4 head-tail).
    ``size`` is the catalogue's largest angular size in arcsec.
    """
    m = _MIRABEST_FITS.match(Path(name).name)
    if not m:
        return None
    code = m.group(1)
    cls = {"1": "FRI", "2": "FRII", "3": "Hybrid"}.get(code[0])
    if cls is None:
        return None
    return {"code": code, "label": cls, "confidence": "confident" if code[1] == "0" else "uncertain",
            "morphology": _MORPHOLOGY.get(code[2], code[2]), "ra": float(m.group(2)), "dec": float(m.group(3)),
            "z": float(m.group(4)), "size_arcsec": float(m.group(5))}


def _fits_files(path: Path, pattern: str = "*.fits") -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(f for f in path.glob(pattern) if f.is_file())
    if not files:
        raise StampflowError(f"no {pattern} files in {path}")
    return files


def load_mirabest_fits(path: str | Path, size: int | None = None) -> RadioSet:
    """MiraBest FITS cutouts (a directory or one file); files whose names do not parse are skipped with a note.
    Images stay float32 Jy/beam; ``size`` centre-crops (the pixel grid is FIRST's 1.8"/px)."""
    from models.preprocess import fit_to_spec
    from training.survey_cutouts import pixel_scale_arcsec, read_fits_with_wcs

    p = _path(path, "MiraBest FITS")
    imgs, labels, ids, ra, dec, extra, scales = [], [], [], [], [], [], []
    skipped = []
    for f in _fits_files(p):
        info = parse_mirabest_fits_name(f.name)
        if info is None:
            skipped.append(f.name)
            continue
        img, wcs, _ = read_fits_with_wcs(f)
        scales.append(pixel_scale_arcsec(wcs))
        imgs.append(fit_to_spec(img, size) if size else img)
        labels.append(MIRABEST_FITS_CLASSES.index(info["label"]))
        ids.append(f.stem)
        ra.append(info["ra"])
        dec.append(info["dec"])
        extra.append({k: str(info[k]) for k in ("code", "confidence", "morphology", "z", "size_arcsec")})
    if skipped:
        print(f"radio: skipped {len(skipped)} FITS files without a MiraBest name: {', '.join(skipped[:5])}",
              file=sys.stderr)
    if not imgs:
        raise StampflowError(f"no MiraBest-named FITS files in {p}")
    shapes = {i.shape for i in imgs}
    if len(shapes) != 1:
        raise StampflowError(f"{p}: FITS images of different shapes {sorted(shapes)}; pass size=N to crop")
    scale = float(np.nanmedian([s for s in scales if s is not None])) if any(scales) else FIRST_PIXEL_SCALE
    return RadioSet(images=np.stack(imgs).astype(np.float32), labels=np.array(labels, dtype=int),
                    classes=MIRABEST_FITS_CLASSES, splits=np.array(["all"] * len(imgs)), ids=ids, survey="FIRST",
                    pixel_scale=round(scale, 4), dataset="mirabest-fits", source=str(p),
                    ra=np.array(ra), dec=np.array(dec), extra=extra)


# ------------------------------------------------------------------------------------------- dispatch


def detect_dataset(path: str | Path) -> str:
    """Which of `DATASETS` a path holds (by file names and archive contents, never by unpickling)."""
    p = _path(path, "radio data")
    name = p.name.lower()
    if p.is_file():
        if name.endswith((".h5", ".hdf5")) or (name.endswith(".zip") and zipfile.is_zipfile(p)):
            return "griese"
        if name.endswith((".fits", ".fit", ".fits.gz")):
            return "mirabest-fits" if parse_mirabest_fits_name(p.name) else "radio-fits"
        if tarfile.is_tarfile(p):
            if "nvss" in name:
                return "frdeep-nvss"
            if "first" in name:
                return "frdeep-first"
            return "mirabest"
        raise StampflowError(f"cannot tell which radio data set {p} is (griese .zip/.h5, FR-DEEP or MiraBest "
                             "tar.gz, FITS)")
    if _find_file(p, ["*.h5", "*.hdf5", "galaxy_data*.zip"]):
        return "griese"
    if _find_file(p, ["FIRST_PNG_dataset.tar.gz", "FIRST_PNG_dataset"]):
        return "frdeep-first"
    if _find_file(p, ["NVSS_PNG_dataset.tar.gz", "NVSS_PNG_dataset"]):
        return "frdeep-nvss"
    if _find_file(p, ["batches.tar.gz", "batches"]):
        return "mirabest"
    if any(_BATCH_RE.search(f.name) for f in p.iterdir() if f.is_file()):
        up = name.upper()
        return "frdeep-nvss" if "NVSS" in up else "frdeep-first" if "FIRST" in up else "mirabest"
    fits_files = sorted(p.glob("*.fits"))
    if fits_files:
        return "mirabest-fits" if any(parse_mirabest_fits_name(f.name) for f in fits_files) else "radio-fits"
    raise StampflowError(f"no radio data set found in {p}")


def load_radio(path: str | Path, dataset: str | None = None, split: str | Sequence[str] | None = None,
               **options: Any) -> RadioSet:
    """Load any supported data set; ``dataset`` overrides detection (see `DATASETS`)."""
    ds = (dataset or detect_dataset(path)).lower()
    if ds == "griese":
        return load_griese(path, split=split, labels=options.get("labels", "literature"),
                           limit=_int_opt(options.get("limit")))
    if ds in ("frdeep-first", "frdeep-nvss", "frdeep"):
        survey = options.get("survey") or (ds.split("-")[1].upper() if "-" in ds else None)
        return load_frdeep(path, survey=survey, split=split)
    if ds == "mirabest":
        return load_mirabest(path, split=split)
    if ds == "mirabest-fits":
        return load_mirabest_fits(path, size=_int_opt(options.get("size"))).select(split)
    if ds == "radio-fits":
        raise StampflowError(f"{path} holds FITS images without labels (MiraBest-named files carry them); "
                             "use `stampflow replay --format radio-fits` to classify them")
    raise StampflowError(f"unknown radio data set '{ds}' (choose from {', '.join(DATASETS)})")


def _int_opt(v: Any) -> int | None:
    if v is None or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        raise StampflowError(f"expected an integer option, got {v!r}") from None


# ---------------------------------------------------------------------------------------- cutout streams


def _cutouts_from_set(rs: RadioSet, instrument: str, truth_source: str, limit: int | None = None) -> Iterator:
    from schemas.cutout_packet import Cutout

    n = len(rs) if limit is None else min(limit, len(rs))
    for i in range(n):
        ra = None if rs.ra is None or not np.isfinite(rs.ra[i]) else float(rs.ra[i])
        dec = None if rs.dec is None or not np.isfinite(rs.dec[i]) else float(rs.dec[i])
        yield Cutout(id=rs.ids[i], survey=rs.survey, bands=[BAND],
                     images={BAND: np.asarray(rs.images[i], dtype=np.float32)}, pixel_scale=rs.pixel_scale,
                     instrument=instrument, ra=ra, dec=dec, truth_label=rs.classes[int(rs.labels[i])],
                     truth_source=truth_source, dataset=rs.dataset, split=str(rs.splits[i]),
                     extra=dict(rs.extra[i]) if rs.extra else {})


def iter_griese_cutouts(path: Path, split: str = "all", labels: str = "literature", limit: Any = None,
                        **_: Any) -> Iterator:
    """Griese HDF5 (zip or not) -> Cutout per image: FIRST, 1.4GHz, 1.8"/px, truth = class name, split."""
    rs = load_griese(path, split=split, labels=labels)
    yield from _cutouts_from_set(rs, "VLA", f"Griese et al. 2023 Label_{labels}", _int_opt(limit))


def iter_frdeep_cutouts(path: Path, survey: str | None = None, split: str = "all", limit: Any = None,
                        **_: Any) -> Iterator:
    """FR-DEEP FIRST (1.8"/px) or NVSS (15"/px) -> Cutout per image (``survey=FIRST|NVSS``)."""
    rs = load_frdeep(path, survey=survey, split=split)
    yield from _cutouts_from_set(rs, "VLA", "FR-DEEP (Tang et al. 2019; FRICAT/CoNFIG)", _int_opt(limit))


def iter_mirabest_cutouts(path: Path, split: str = "all", limit: Any = None, **_: Any) -> Iterator:
    """MiraBest batches -> Cutout per image with RA/Dec from the file name."""
    rs = load_mirabest(path, split=split)
    yield from _cutouts_from_set(rs, "VLA", "MiraBest (Miraghaei & Best 2017)", _int_opt(limit))


def _coords_option(coords: Any):
    """``coords``: a CSV path, ``"ra,dec;ra,dec"`` in degrees, or a SkyCoord -> (SkyCoord, names | None)."""
    from training.survey_cutouts import as_skycoord, read_coordinate_list

    if coords is None:
        return None, None
    if not isinstance(coords, (str, Path)):
        return as_skycoord(coords), None
    text = str(coords)
    if Path(text).is_file():
        ra, dec, names = read_coordinate_list(text)
        return as_skycoord(ra=ra, dec=dec), names
    try:
        pairs = [tuple(float(v) for v in item.split(",")) for item in text.split(";") if item.strip()]
    except ValueError:
        raise StampflowError(f"coords must be a CSV file or 'ra,dec;ra,dec' in degrees, not {text!r}") from None
    if not pairs or any(len(pr) != 2 for pr in pairs):
        raise StampflowError(f"coords must be a CSV file or 'ra,dec;ra,dec' in degrees, not {text!r}")
    return as_skycoord(ra=[pr[0] for pr in pairs], dec=[pr[1] for pr in pairs]), None


def iter_radio_fits_cutouts(path: Path, coords: Any = None, size: Any = None, mode: str = "partial",
                            survey: str | None = None, band: str = BAND, pattern: str = "*.fits",
                            on_missing: str = "skip", **_: Any) -> Iterator:
    """FITS images (one file or a directory) -> Cutouts.

    Without ``coords``: each image is one cutout (centre-cropped to ``size`` if given), ra/dec from a MiraBest
    file name or else the WCS position of the image centre, truth label from a MiraBest name. With ``coords``
    (CSV path or ``"ra,dec;..."``): a ``size`` (default 150) stamp around every coordinate that falls on each
    image (`training.survey_cutouts.cut_stamps`, NaN-filled at edges, ``extra['partial']``); positions off an
    image are reported on stderr and skipped (``on_missing=raise`` makes them an error).
    """
    from models.preprocess import fit_to_spec
    from schemas.cutout_packet import Cutout
    from training.survey_cutouts import cut_stamps, pixel_scale_arcsec, read_fits_with_wcs

    p = _path(path, "FITS path")
    files = _fits_files(p, pattern)
    sky, names = _coords_option(coords)
    stamp_size = _int_opt(size)
    for f in files:
        image, wcs, header = read_fits_with_wcs(f)
        scale = pixel_scale_arcsec(wcs)
        srv = (survey or header.get("SURVEY") or header.get("TELESCOP") or "unknown").strip().upper()
        instrument = (header.get("TELESCOP") or "").strip() or None
        info = parse_mirabest_fits_name(f.name)
        base_extra = {"file": f.name}
        if info:
            base_extra.update({k: str(info[k]) for k in ("code", "confidence", "morphology", "z", "size_arcsec")})
        if sky is None:
            if info:
                ra, dec = info["ra"], info["dec"]
            else:
                c = wcs.pixel_to_world((image.shape[1] - 1) / 2.0, (image.shape[0] - 1) / 2.0)
                ra, dec = float(c.icrs.ra.deg), float(c.icrs.dec.deg)
            img = fit_to_spec(image, stamp_size) if stamp_size else image
            yield Cutout(id=f.stem, survey=srv, bands=[band], images={band: np.asarray(img, dtype=np.float32)},
                         pixel_scale=scale, instrument=instrument, ra=ra, dec=dec,
                         truth_label=info["label"] if info else None,
                         truth_source="MiraBest file name code" if info else None,
                         dataset="mirabest-fits" if info else "radio-fits", split=None, extra=base_extra)
            continue
        result = cut_stamps(image, wcs, sky, stamp_size or 150, mode=mode, on_missing="skip", names=names)
        if result.skipped:
            if on_missing == "raise":
                i, ra, dec, why = result.skipped[0]
                raise StampflowError(f"{f.name}: coordinate {i} (ra {ra:.5f}, dec {dec:.5f}) {why}")
            print(f"radio-fits: {f.name}: skipped {len(result.skipped)} of {len(sky)} coordinates not on the image",
                  file=sys.stderr)
        for st in result.stamps:
            label = st.name or f"{st.ra:.5f}{st.dec:+.5f}"
            yield Cutout(id=f"{f.stem}/{label}", survey=srv, bands=[band], images={band: st.data},
                         pixel_scale=st.pixel_scale, instrument=instrument, ra=st.ra, dec=st.dec,
                         truth_label=None, dataset="radio-fits", split=None,
                         extra={**{"file": f.name}, "partial": str(st.partial).lower(),
                                "filled_fraction": f"{st.filled_fraction:.4f}"})


def iter_cutouts(path: Path, dataset: str | None = None, **options: Any) -> Iterator:
    """Any radio format (detected, or ``dataset=``): dispatches to the ``iter_*_cutouts`` readers."""
    ds = (dataset or detect_dataset(path)).lower()
    if ds == "griese":
        return iter_griese_cutouts(path, **options)
    if ds.startswith("frdeep"):
        if "-" in ds:
            options.setdefault("survey", ds.split("-")[1].upper())
        return iter_frdeep_cutouts(path, **options)
    if ds == "mirabest":
        return iter_mirabest_cutouts(path, **options)
    if ds in ("mirabest-fits", "radio-fits"):
        return iter_radio_fits_cutouts(path, **options)
    raise StampflowError(f"unknown radio data set '{ds}' (choose from {', '.join(DATASETS)})")
