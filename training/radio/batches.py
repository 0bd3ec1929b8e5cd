"""CIFAR-style pickled batches (``data_batch_N`` / ``test_batch``): FR-DEEP FIRST/NVSS and MiraBest.

Pickles are only ever read through `training.safe_unpickle` (numpy arrays and plain containers).
"""
from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import Sequence

import numpy as np

from schemas.errors import StampflowError
from training.radio.sets import (FIRST_PIXEL_SCALE, FR_CLASSES, SURVEY_PIXEL_SCALE, RadioSet, existing_path,
                                 find_file)
from training.safe_unpickle import load_cifar_batch

BATCH_RE = re.compile(r"(?:^|/)(data_batch_(\d+)|test_batch)$")


def _batch_members(path: Path) -> list[tuple[str, bytes]]:
    """(member name, bytes) of every ``data_batch_N``/``test_batch`` in a tarball or directory, in order."""
    found: list[tuple[str, bytes]] = []
    if path.is_dir():
        for f in path.rglob("*"):
            if f.is_file() and BATCH_RE.search(f.as_posix()) and ".ipynb_checkpoints" not in f.parts:
                found.append((f.relative_to(path).as_posix(), f.read_bytes()))
    else:
        try:
            with tarfile.open(path, "r:*") as tf:
                for m in tf.getmembers():
                    if m.isfile() and BATCH_RE.search(m.name) and ".ipynb_checkpoints" not in m.name:
                        fh = tf.extractfile(m)
                        if fh is not None:
                            found.append((m.name, fh.read()))
        except (tarfile.TarError, OSError) as exc:
            raise StampflowError(f"cannot read {path} as a tar archive of batches: {exc}") from None
    if not found:
        raise StampflowError(f"no data_batch_N / test_batch files in {path}")

    def order(item):
        m = BATCH_RE.search(item[0])
        return (1, 0) if m.group(1) == "test_batch" else (0, int(m.group(2)))

    return sorted(found, key=order)


def read_batches(path: Path, image_size: int = 150) -> tuple[np.ndarray, np.ndarray, list[str], list[str], list[str]]:
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


def _frdeep_source(path: Path, survey: str | None) -> tuple[Path, str]:
    if path.is_dir():
        if any(BATCH_RE.search(f.name) for f in path.iterdir() if f.is_file()):
            name = path.name.upper()
            inferred = "NVSS" if "NVSS" in name else "FIRST" if "FIRST" in name else None
            chosen = (survey or inferred or "").upper()
            if not chosen:
                raise StampflowError(f"cannot tell whether {path} holds FIRST or NVSS batches: pass survey=FIRST|NVSS")
            return path, chosen
        chosen = (survey or "FIRST").upper()
        hit = find_file(path, [f"{chosen}_PNG_dataset.tar.gz", f"{chosen}*.tar.gz", f"{chosen}_PNG_dataset",
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
    src, chosen = _frdeep_source(existing_path(path, "FR-DEEP data"), survey)
    if chosen not in ("FIRST", "NVSS"):
        raise StampflowError(f"FR-DEEP survey must be FIRST or NVSS, not {chosen}")
    images, labels, names, splits, members = read_batches(src)
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
    p = existing_path(path, "MiraBest data")
    if p.is_dir() and not any(BATCH_RE.search(f.name) for f in p.iterdir() if f.is_file()):
        hit = find_file(p, ["batches.tar.gz", "batches", "*.tar.gz"])
        if hit is None:
            raise StampflowError(f"no MiraBest batches in {p} (expected batches.tar.gz)")
        p = hit
    images, labels, names, splits, members = read_batches(p)
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
