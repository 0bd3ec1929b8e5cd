"""``stampflow replay --format candels|clash``: a CANDELS or CLASH stamp set (label CSV + ``<ID>.fits`` stamps)
as cutout packets, one per labelled stamp, with the vote fractions as truth."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from schemas.cutout_packet import Cutout
from schemas.errors import StampflowError
from training.family import parse_options
from training.morphology.labels import (instrument_for, is_clash_id, labels_file, parse_candels_id, parse_clash_id,
                                        read_labels)
from training.morphology.network import CANDELS_BAND, CLASH_FILTERS, CLASSES, FAMILY_NAME
from training.morphology.options import MorphologyReplayOptions
from training.morphology.stamps import (CANDELS_PIXEL_SCALE, CLASH_PIXEL_SCALE, header_band, index_stamps, join,
                                        read_stamp, stamps_dir)

CANDELS_DESCRIPTION = "CANDELS F160W stamps + CANDELS_labels.csv vote fractions"
CLASH_DESCRIPTION = "CLASH stamps + CLASH_labels.csv vote fractions"


def iter_morphology_cutouts(path: Path, **options: Any) -> Iterator[Cutout]:
    """Cutouts of a CANDELS or CLASH stamp set (``stampflow replay --format candels|clash``).

    One cutout per labelled stamp, with the five fractions as ``truth_values`` and the top class as
    ``truth_label``; ``unlabelled=true`` adds the stamps that have no label row (no truth). CLASH: ``bands=galaxy``
    (default) carries every filter in which the galaxy has a stamp, so combined-filter models can take it (the
    truth is the label of ``extra['label_filter']``); ``bands=row`` only the labelled filter. Stamps are
    per-object sizes cut at four Petrosian radii, so ``pixel_scale`` is None (the native mosaic scale is in
    ``extra['native_pixel_scale']``). Options: `MorphologyReplayOptions`.
    """
    o = parse_options(MorphologyReplayOptions, options, family=FAMILY_NAME, command="replay")
    bands, with_unlabelled = o.bands, o.unlabelled
    csv_path = labels_file(path, o.dataset)
    labels = read_labels(csv_path, o.dataset)
    dataset = labels.dataset
    stamps = index_stamps(stamps_dir(csv_path))
    joined, report = join(labels, stamps)
    if not joined and not (with_unlabelled and stamps):
        raise StampflowError(f"no stamps in {stamps_dir(csv_path)} match the {len(labels)} rows of {csv_path.name}")
    scale = CLASH_PIXEL_SCALE if dataset == "clash" else CANDELS_PIXEL_SCALE
    survey_name = "CLASH" if dataset == "clash" else "CANDELS"

    def make(sid: str, fractions: np.ndarray | None) -> Cutout:
        img, header = read_stamp(stamps[sid])
        if dataset == "clash":
            cid = parse_clash_id(sid)
            band_list = [cid.filter]
            if bands == "galaxy":
                band_list += [b for b in CLASH_FILTERS if b != cid.filter and cid.stamp_id(b) in stamps]
            images = {cid.filter: img}
            for b in band_list[1:]:
                images[b] = read_stamp(stamps[cid.stamp_id(b)])[0]
            extra = {"cluster": cid.cluster, "object_id": cid.object_id, "label_filter": cid.filter,
                     "instruments": ",".join(f"{b}:{'/'.join(instrument_for(b))}" for b in band_list)}
            row_b = cid.filter
        else:
            cand = parse_candels_id(sid)
            band_list, images = [CANDELS_BAND], {CANDELS_BAND: img}
            extra = {"field": cand.field, "region": cand.region, "object_id": cand.object_id}
            row_b = CANDELS_BAND
        found = header_band(header)
        if found and found != row_b:
            raise StampflowError(f"{stamps[sid]}: header filter {found} does not match the ID's {row_b}")
        extra.update({"file": stamps[sid].name, "native_pixel_scale": str(scale), "stamp_size": str(img.shape[0]),
                      "survey_program": survey_name})
        truth = None if fractions is None else {c: float(f) for c, f in zip(CLASSES, fractions)}
        ra = header.get("CRVAL1")
        dec = header.get("CRVAL2")
        return Cutout(id=sid, survey="HST", instrument=instrument_for(row_b)[0], bands=band_list, images=images,
                      pixel_scale=None, ra=float(ra) if ra is not None else None,
                      dec=float(dec) if dec is not None else None,
                      truth_label=None if fractions is None else CLASSES[int(np.argmax(fractions))],
                      truth_values=truth, truth_source=None if fractions is None else
                      f"{survey_name} visual classifications ({csv_path.name}, vote fractions)",
                      dataset=dataset, extra=extra)

    for k in joined:
        yield make(labels.ids[k], labels.fractions[k])
    if with_unlabelled:
        for sid in report.stamps_without_labels:
            if dataset == "clash" and not is_clash_id(sid):
                continue
            yield make(sid, None)
