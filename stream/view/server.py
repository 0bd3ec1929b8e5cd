"""The viewer's HTTP server: the standard library's ``ThreadingHTTPServer``, a handful of GET routes, JSON out.

Why no web framework: the page is one static HTML file, one script and one stylesheet, and the API is six GET
routes over data loaded once; ``http.server`` does that with no new dependency, and threads serve a page's
thumbnails in parallel. Routes:

* ``/`` and ``/static/{app.js,app.css}``: the page (every asset from here: no CDN, works offline);
* ``/api/meta``: models (version, mock-trained or not), labels, flags, counts; ``/api/rows?...``: one page of
  rows, filtered and sorted on the server (`index.Query`); ``/api/result/<i>``: every field of a result and its
  packet; ``/api/dead``: the dead letters;
* ``/stamp/<i>/<name>.png?size=thumb|full``: a stamp (`render.png`); ``/dead/<i>/bytes``: a dead letter's original
  bytes, as a download.

Every response carries a Content-Security-Policy allowing only this origin's own script, style and images, so
even a packet field that looks like HTML could never run; the page also writes data only through textContent.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from schemas.errors import PacketError, StampflowError
from schemas.packet import Packet, RawMessage
from stream.decode import Decoder
from stream.view.index import Query
from stream.view.inputs import ViewData
from stream.decode.container import whole_record
from stream.view.render import jsonable, packet_fields, png, stamp_array

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
                "favicon.svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._d[key] = value
            while len(self._d) > self.size:
                self._d.popitem(last=False)


class Viewer:
    """The answers, independent of HTTP (the unit tests call these directly as well as over a socket)."""

    def __init__(self, data: ViewData, decoder: Decoder, models: dict[str, dict[str, Any]]):
        self.data = data
        self.decoder = decoder
        self.models = models   # name -> {"mock": bool, "trained_on": str, "family": str}
        self._decode_lock = threading.Lock()  # the decoder caches its last header: one caller at a time
        self._packets = _LRU(256)
        # thumbnails are a few kB, full-size stamps up to a few hundred: bounded apart
        self._pngs = {"thumb": _LRU(4096), "full": _LRU(128)}

    # -- packets ------------------------------------------------------------------------------------------------
    def packet(self, i: int) -> tuple[Packet | None, str | None]:
        """Result i's packet (decoded once, cached) or the reason there is none."""
        entry_index = self.data.entry_of[i]
        if entry_index < 0:
            return None, "the packet of this result is not among the inputs given to the viewer"
        hit = self._packets.get(entry_index)
        if hit is not None:
            return hit
        entry = self.data.spool.entries[entry_index]
        value = self.data.spool.read(entry)
        try:
            with self._decode_lock:
                packet = self.decoder.decode(RawMessage(value=value, origin=entry.origin, framing=entry.framing))
            out: tuple[Packet | None, str | None] = (packet, None)
        except PacketError as exc:
            out = (None, f"the packet does not decode: {exc}")
        self._packets.put(entry_index, out)
        return out

    def stamp_png(self, i: int, name: str, size: str) -> bytes | None:
        key = (self.data.entry_of[i], name, size)
        cache = self._pngs[size]
        hit = cache.get(key)
        if hit is not None:
            return hit
        packet, _ = self.packet(i)
        if packet is None:
            return None
        try:
            image = stamp_array(packet, name)
        except PacketError:
            return None
        if image is None:
            return None
        body = png(image.data, size)
        cache.put(key, body)
        return body

    # -- API answers --------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        facets = self.data.index.facets()
        for name, info in facets["models"].items():
            info.update(self.models.get(name, {"mock": False, "trained_on": "unknown"}))
        return {"described": self.data.described, "results": len(self.data.results),
                "unmatched": self.data.unmatched, "dead_letters": len(self.data.dead_letters), **facets}

    def rows(self, params: dict[str, str]) -> dict[str, Any]:
        q = Query.parse(params)
        total, ids = self.data.index.query(q)
        return {"total": total, "page": q.page, "per_page": q.per_page, "rows": [self.row(i) for i in ids]}

    def row(self, i: int) -> dict[str, Any]:
        rec = json.loads(self.data.results[i])
        entry_index = self.data.entry_of[i]
        stamps = self.data.spool.entries[entry_index].stamps if entry_index >= 0 else []
        observed = rec.get("alert_time") is not None
        t = rec["alert_time"] if observed else rec.get("ingest_time")
        truth = rec.get("truth") or {}
        return {"id": i, "objectId": rec["objectId"], "candid": str(rec["candid"]), "survey": rec.get("survey"),
                "time": _iso(t), "time_kind": "observed" if observed else "ingested", "flags": rec.get("flags") or [], "truth": truth.get("label"),
                "truth_values": truth.get("values") or {}, "stamps": stamps,
                "predictions": [self._prediction(p) for p in rec["predictions"]]}

    def _prediction(self, p: dict[str, Any]) -> dict[str, Any]:
        probs = p.get("probabilities") or {}
        return {"model": p["model"], "model_version": p.get("model_version"), "label": p["label"],
                "probability": probs.get(p["label"]), "probabilities": jsonable(probs),
                "uncertainty": jsonable(p.get("uncertainty")), "task": p.get("task", "classification"),
                "values": jsonable(p.get("values") or {}), "correct": p.get("correct"),
                "out_of_distribution": bool(p.get("out_of_distribution", False)),
                "mock": bool(self.models.get(p["model"], {}).get("mock"))}

    def result(self, i: int) -> dict[str, Any]:
        rec = json.loads(self.data.results[i])
        packet, why = self.packet(i)
        out: dict[str, Any] = {"row": self.row(i), "result": jsonable(rec), "packet": None, "packet_error": why}
        if packet is not None:
            value = self.data.spool.read(self.data.spool.entries[self.data.entry_of[i]])
            full = whole_record(value) if packet.survey == "ZTF" else None
            stamps = []
            for name in self.row(i)["stamps"]:
                try:
                    img = stamp_array(packet, name)
                    info = {"name": name, "shape": list(img.original_shape), "padded": img.padded,
                            "nan_fraction": round(img.nan_fraction, 4)}
                except PacketError as exc:
                    info = {"name": name, "error": str(exc)}
                stamps.append(info)
            out["packet"] = {"fields": [[k, jsonable(v)] for k, v in packet_fields(packet, full)],
                             "origin": packet.origin.describe(), "stamps": stamps}
        return out

    def dead(self) -> dict[str, Any]:
        return {"dead_letters": [jsonable(d) for d in self.data.dead_letters]}

    def dead_bytes(self, i: int) -> bytes:
        spool = self.data.dead_spool
        return spool.read(spool.entries[i])


def _iso(t: Any) -> str | None:
    if t is None:
        return None
    try:
        return datetime.fromtimestamp(float(t), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return None


class _Handler(BaseHTTPRequestHandler):
    viewer: Viewer  # set on the subclass `make_server` builds
    server_version = "stampflow-view"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # one line per request would bury the URL line
        log.debug("%s " + fmt, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query))
        parts = [p for p in url.path.split("/") if p]
        try:
            self._route(parts, params)
        except (BrokenPipeError, ConnectionResetError):  # the browser moved on (a new page, a closed tab)
            self.close_connection = True
        except StampflowError as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except (IndexError, ValueError):
            self._json({"error": f"no such item: {url.path}"}, HTTPStatus.NOT_FOUND)

    def _route(self, parts: list[str], params: dict[str, str]) -> None:
        v = self.viewer
        if not parts:
            return self._file("index.html", "text/html; charset=utf-8")
        head = parts[0]
        if head == "favicon.ico" and len(parts) == 1:  # browsers ask for it whatever the page links
            return self._file("favicon.svg", STATIC_FILES["favicon.svg"])
        if head == "static" and len(parts) == 2 and parts[1] in STATIC_FILES:
            return self._file(parts[1], STATIC_FILES[parts[1]])
        if head == "api" and len(parts) == 2 and parts[1] in ("meta", "rows", "dead"):
            return self._json({"meta": v.meta, "rows": lambda: v.rows(params), "dead": v.dead}[parts[1]]())
        if head == "api" and len(parts) == 3 and parts[1] == "result":
            return self._json(v.result(self._id(parts[2], len(v.data.results))))
        if head == "stamp" and len(parts) == 3 and parts[2].endswith(".png"):
            i = self._id(parts[1], len(v.data.results))
            body = v.stamp_png(i, parts[2][:-4], "full" if params.get("size") == "full" else "thumb")
            if body is None:
                return self._json({"error": "no such stamp"}, HTTPStatus.NOT_FOUND)
            return self._send(body, "image/png", cache=True)
        if head == "dead" and len(parts) == 3 and parts[2] == "bytes":
            i = self._id(parts[1], len(v.data.dead_letters))
            return self._send(v.dead_bytes(i), "application/octet-stream",
                              extra={"Content-Disposition": f'attachment; filename="dead-letter-{i}.bin"'})
        self._json({"error": f"no such page: /{'/'.join(parts)}"}, HTTPStatus.NOT_FOUND)

    @staticmethod
    def _id(text: str, n: int) -> int:
        if not text.isdigit() or int(text) >= n:
            raise IndexError(text)
        return int(text)

    def _file(self, name: str, ctype: str) -> None:
        self._send((STATIC / name).read_bytes(), ctype)

    def _json(self, obj: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(jsonable(obj), allow_nan=False).encode(), "application/json", status)

    def _send(self, body: bytes, ctype: str, status: HTTPStatus = HTTPStatus.OK, cache: bool = False,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        for k, val in (extra or {}).items():
            self.send_header(k, val)
        self.end_headers()
        self.wfile.write(body)


def make_server(viewer: Viewer, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A bound server (``port=0``: any free port; ``server.server_address`` says which)."""
    handler = type("ViewHandler", (_Handler,), {"viewer": viewer})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise StampflowError(f"cannot serve the viewer on {host}:{port}: {exc.strerror or exc}") from None
    server.daemon_threads = True
    return server
