"""The alert mix of the visit benchmark: real ZTF alerts (ZTF framing, reach the star/galaxy model) and real Rubin
alerts (Confluent framing with Rubin's schema id, decoded and published as unrouted: no Rubin model exists yet).

* ZTF: every decodable real ZTF alert with a science stamp in ``$STAMPFLOW_DATA/ztf_alerts`` (the `make bench`
  alerts), as the files hold them: one Avro object container per message.
* Rubin: the real LSST alerts of ``$STAMPFLOW_DATA/lsst_alerts/fink-client/part-2-918301.avro`` (7 alerts of schema
  10.0 with their 30x30 cutouts and histories, 120-300 kB each), re-encoded the way Rubin publishes them:
  schemaless Avro under the ``lsst-alert-packet`` 10.0 schema behind Confluent framing, id 1000. Fink's Spark
  writer stores an absent nested record (``ssSource``) as a record of nulls; Rubin's schema says ``null`` there,
  so such a record becomes ``None`` (nothing else is touched).

A pool of ``size`` messages is built by copying the distinct alerts with **fresh candids** (ZTF ``candid``, Rubin
``diaSourceId``): the varint of the id is replaced in place by one of the same length, so the bytes stay valid
Avro (a container's block sizes do not change), and every copy is checked by decoding it. The stream then cycles
through the pool; a burst holds references to pool entries, so a 40,000-alert visit costs the pool's memory,
not 40,000 copies (`stream.replay.VisitCadence` holds a whole visit in memory).
"""
from __future__ import annotations

import fastavro

from schemas.packet import Origin, RawMessage
from schemas.rubin import encode_rubin_alert
from stream.config import data_root
from stream.decode import Decoder
from stream.decode.varint import encode_long

RUBIN_FILE = ("lsst_alerts", "fink-client", "part-2-918301.avro")
RUBIN_VERSION = (10, 0)


def rubin_alerts() -> list[bytes]:
    """The real Rubin alerts, Confluent-framed under Rubin's id for schema 10.0 (1000)."""
    with open(data_root().joinpath(*RUBIN_FILE), "rb") as fh:
        records = list(fastavro.reader(fh))

    def nulls_as_null(rec: dict) -> dict:
        return {k: (None if isinstance(v, dict) and v and all(x is None for x in v.values()) else v)
                for k, v in rec.items()}

    return [encode_rubin_alert(nulls_as_null(r), *RUBIN_VERSION) for r in records]


def with_candid(value: bytes, old: int, new: int) -> bytes | None:
    """``value`` with every Avro encoding of ``old`` replaced by ``new`` (same encoded length), or None."""
    a, b = encode_long(old), encode_long(new)
    if len(a) != len(b) or value.count(a) == 0:
        return None
    return value.replace(a, b)


def alert_pool(ztf: list[bytes], size: int, rubin_fraction: float) -> tuple[list[bytes], list[str]]:
    """``size`` messages, a ``rubin_fraction`` share of them Rubin, interleaved; each with a fresh candid.

    Returns the values and their kind (``"ztf"`` or ``"rubin"``) in stream order."""
    rubin = rubin_alerts()
    dec = Decoder()
    origin = Origin(topic="pool", partition=0, offset=0)
    base = {"ztf": [(v, dec.decode(RawMessage(v, origin)).candid) for v in ztf],
            "rubin": [(v, dec.decode(RawMessage(v, origin)).candid) for v in rubin]}
    values: list[bytes] = []
    kinds: list[str] = []
    used = {"ztf": 0, "rubin": 0}
    acc = 0.0
    for i in range(size):
        acc += rubin_fraction
        kind = "rubin" if acc >= 1.0 else "ztf"
        if kind == "rubin":
            acc -= 1.0
        n = used[kind]
        used[kind] += 1
        value, candid = base[kind][n % len(base[kind])]
        copy = n // len(base[kind])
        if copy:  # copy 0 is the real alert as it is; later copies get candid + copy (same varint length)
            fresh = with_candid(value, candid, candid + copy)
            if fresh is not None and dec.decode(RawMessage(fresh, origin)).candid == candid + copy:
                value = fresh
        values.append(value)
        kinds.append(kind)
    return values, kinds
