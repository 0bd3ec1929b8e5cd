"""``stampflow replay --format deepmerge``: an HLSP file (real or mock) as cutout packets, one per row."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from schemas.cutout_packet import Cutout
from training.deepmerge.hlsp import read_hlsp
from training.deepmerge.network import CLASSES, FAMILY_NAME, INSTRUMENTS, PIXEL_SCALE
from training.deepmerge.options import DeepMergeReplayOptions
from training.family import parse_options

DESCRIPTION = "DeepMerge HLSP FITS (MergerLabels table) or -x.npy/-y.npy pairs"


def iter_deepmerge_cutouts(path: str | Path, **options: Any) -> Iterator[Cutout]:
    """Yield one `Cutout` per HLSP row (survey HST, bands = the filters, truth merger / non-merger).

    Options (`DeepMergeReplayOptions`; strings from the CLI are accepted): ``variant``, ``filters`` (2|3) and
    ``format`` to pick a file in a directory, ``start`` and ``limit`` to replay part of a file, ``split`` to tag
    the cutouts.
    """
    o = parse_options(DeepMergeReplayOptions, options, family=FAMILY_NAME, command="replay")
    data = read_hlsp(path, variant=o.variant, n_filters=o.filters or None, fmt=o.format)
    stop = len(data) if o.limit is None else min(len(data), o.start + o.limit)
    variant = data.variant or "unknown"
    dataset = f"deepmerge-{variant}" + ("-mock" if data.mock else "")
    for s in range(o.start, stop, 512):
        block = np.asarray(data.images[s:min(stop, s + 512)], dtype=np.float32)
        for k, cube in enumerate(block):
            i = s + k
            yield Cutout(id=f"{data.path.name}:{i}", survey="HST", instrument=INSTRUMENTS[len(data.filters)],
                         bands=list(data.filters), images={b: np.ascontiguousarray(cube[j])
                                                           for j, b in enumerate(data.filters)},
                         pixel_scale=PIXEL_SCALE, truth_label=CLASSES[int(data.labels[i])],
                         truth_source="DeepMerge HLSP MergerLabels" + (" (mock)" if data.mock else ""),
                         dataset=dataset, split=o.split,
                         extra={"row": str(i), "variant": variant, "file": data.path.name})
