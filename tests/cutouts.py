"""Cutouts through the worker's path in unit tests: encoded as packets, decoded, routed, prepared."""
from __future__ import annotations

import numpy as np

from models.preprocess import prepare_batch
from schemas.cutout_packet import encode_cutout
from stream.decode import Decoder
from schemas.packet import Origin, Packet, RawMessage


def as_packets(cutouts) -> list[Packet]:
    """Each cutout as the worker receives it: one stream message, decoded."""
    decoder = Decoder()
    return [decoder.decode(RawMessage(encode_cutout(c), Origin(topic="t", partition=0, offset=i)))
            for i, c in enumerate(cutouts)]


def served_batch(clf, cutouts) -> np.ndarray:
    """The array the engine hands ``clf`` for these cutouts; asserts every packet routes and prepares."""
    packets = as_packets(cutouts)
    assert all(clf.input_spec.accepts(p) for p in packets), [clf.input_spec.reject_reason(p) for p in packets]
    batch, errors = prepare_batch(packets, clf.input_spec)
    assert errors == [None] * len(packets), errors
    return batch
