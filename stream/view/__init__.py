"""``stampflow view``: a local web page of the stamps next to what every model said about them.

One job per module:

* `spool`: the input messages, kept on disk (a temporary file) and found again by origin or candid;
* `inputs`: what the page shows, read once at start: a results file (JSON lines or Avro) plus its input
  files, or a Kafka result topic plus its input topic (`kafka_inputs`), and the dead letters;
* `index`: compact rows over every result, filtered, sorted and paged on the server (100,000 results stay
  responsive because the browser only ever holds one page);
* `render`: stamps as PNG (zscale + asinh, NaN in a distinct colour, FITS orientation kept) and the packet
  fields a person checks first;
* `server`: the HTTP server (the standard library's ``ThreadingHTTPServer``) and its JSON API; the page itself
  is plain files in ``static/`` (no CDN, no build step).

On the serving floor: imports `schemas`, `models` and `stream`, never `training`. Stamps are decoded through the
worker's own `Decoder` (`stream.worker.build_decoder`), so the viewer shows exactly what the models read.
"""

#: The port `stampflow view` listens on unless told otherwise (the CLI's default and the demo's "open" line).
DEFAULT_PORT = 8765
