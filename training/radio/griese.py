"""The Griese et al. (2023) FIRST data set: one HDF5 file, one group per image, read from a ``.h5`` or straight
from a ``.zip`` (see `training.radio.data` for the format)."""
from __future__ import annotations

import io
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from schemas.errors import StampflowError
from training.radio.sets import FIRST_PIXEL_SCALE, GRIESE_CLASSES, RadioSet, existing_path, find_file, parse_splits

# Inflating a zipped HDF5 into memory up to this size; larger members go to a temporary file that is removed.
_MAX_IN_MEMORY = 1 << 30


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

    p = existing_path(path, "Griese HDF5 file")
    if p.is_dir():
        hit = find_file(p, ["*.h5", "*.hdf5", "galaxy_data*.zip", "*.zip"])
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
