"""Avro alerts -> `Packet`: the decoder package, one job per module.

Modules, from the bytes up (each imports only the ones above it):

* `varint`: Avro's zigzag varint, the one reader and the one writer;
* `codecs`: block codecs (deflate, snappy, bzip2, xz, zstandard), each with an output limit;
* `container`: object container framing, parsed and written (``MAX_DECOMPRESSED_AVRO`` lives here);
* `projection`: the fields a `Packet` needs, and the reader schema keeping only those;
* `codegen`: the code generator's core, shared by `read_gen` (the decoder's projection reader) and `write_gen`
  (the Parquet path's row writer);
* `schema_cache`: writer schemas parsed once (`SchemaEntry`) in an LRU (`SchemaCache`);
* `mappers`: projected records -> `Packet` (ZTF, Rubin, stampflow cutout packets);
* `decoder`: `Decoder` (framing sniffing, ZTF container and Confluent wire) and `split_container`;
* `arrow`: Parquet rows as Avro (schema inferred from Arrow, `RowWriter`), for the file source.

Confluent-wire writer schemas come from `stream.schema_registry`. What other code imports is re-exported here.
"""
from __future__ import annotations

from stream.decode.container import (CONTAINER_MAGIC, MAX_DECOMPRESSED_AVRO, Container, container_header,
                                     make_container, parse_container)
from stream.decode.decoder import Decoder, split_container
from stream.decode.mappers import ZTF_NOMINAL_SIZE, cutout_candid, jd_to_unix, mjd_tai_to_unix
from stream.decode.projection import projection_schema, projection_spec
from stream.decode.schema_cache import SchemaCache, SchemaEntry
from stream.decode.varint import encode_long, read_long

__all__ = ["Decoder", "Container", "SchemaEntry", "SchemaCache", "parse_container", "split_container",
           "make_container", "container_header", "read_long", "encode_long", "projection_spec",
           "projection_schema", "cutout_candid", "ZTF_NOMINAL_SIZE", "CONTAINER_MAGIC", "MAX_DECOMPRESSED_AVRO",
           "jd_to_unix", "mjd_tai_to_unix"]
