"""Every result as a compact row, and the server-side filter, sort and page over them.

The browser never holds more than one page: a query walks the compact rows (tuples of ints and floats, no JSON)
and returns the ids of one page plus the total. Parsing a result's JSON happens only for the rows of that page.
On 100,000 results a query costs tens of milliseconds here (see docs/viewer.md); the last few orderings are
cached so paging through one filter does not redo the sort.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

from schemas.errors import StampflowError

#: Flags a result can be filtered by: the result's own flags plus the per-prediction out-of-distribution flag.
FLAG_OOD = "out_of_distribution"
SORTS = ("time", "uncertainty")
MAX_PER_PAGE = 200


@dataclass(frozen=True, slots=True)
class Query:
    """One page request. ``model`` narrows label, uncertainty and disagreement to that model's prediction;
    without it they apply to any prediction of the result."""

    model: str | None = None
    label: str | None = None
    flag: str | None = None
    umin: float | None = None
    umax: float | None = None
    disagrees: bool = False
    sort: str = "time"
    descending: bool = False
    page: int = 1
    per_page: int = 50

    @classmethod
    def parse(cls, params: dict[str, str]) -> "Query":
        """From URL query parameters; a bad value is a one-line `StampflowError` (the API answers 400)."""
        def num(name: str) -> float | None:
            text = params.get(name, "").strip()
            if not text:
                return None
            try:
                value = float(text)
            except ValueError:
                raise StampflowError(f"{name}={text!r} is not a number") from None
            if math.isnan(value):
                raise StampflowError(f"{name} must not be NaN")
            return value

        def integer(name: str, default: int, lo: int, hi: int) -> int:
            text = params.get(name, "").strip()
            if not text:
                return default
            if not text.isdigit() or not lo <= int(text) <= hi:
                raise StampflowError(f"{name}={text!r}: expected a whole number from {lo} to {hi}")
            return int(text)

        sort = params.get("sort") or "time"
        if sort not in SORTS:
            raise StampflowError(f"sort={sort!r}: expected one of {', '.join(SORTS)}")
        order = params.get("order") or "asc"
        if order not in ("asc", "desc"):
            raise StampflowError(f"order={order!r}: expected asc or desc")
        return cls(model=params.get("model") or None, label=params.get("label") or None,
                   flag=params.get("flag") or None, umin=num("umin"), umax=num("umax"),
                   disagrees=params.get("disagrees") in ("1", "true", "on"), sort=sort, descending=order == "desc",
                   page=integer("page", 1, 1, 10**9), per_page=integer("per_page", 50, 1, MAX_PER_PAGE))

    def ordering_key(self) -> tuple:
        return (self.model, self.label, self.flag, self.umin, self.umax, self.disagrees, self.sort, self.descending)


class ResultIndex:
    """Compact rows: per result (time, flags, predictions as (model, label, uncertainty, ood, correct))."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.flags: list[frozenset[int]] = []
        self.preds: list[tuple[tuple[int, int, float, bool, bool | None], ...]] = []
        self._names: dict[str, int] = {}     # interned model, label and flag names
        self.name_list: list[str] = []
        self.labels_by_model: dict[str, dict[str, int]] = {}
        self.flag_counts: dict[str, int] = {}
        self.versions: dict[str, set[str]] = {}
        self._cache: OrderedDict[tuple, list[int]] = OrderedDict()
        self._lock = threading.Lock()

    def _id(self, name: str) -> int:
        i = self._names.get(name)
        if i is None:
            i = self._names[name] = len(self.name_list)
            self.name_list.append(name)
        return i

    def add(self, record: dict[str, Any]) -> None:
        """Index one result record (schema v1, v2 or v2.1: missing v2 fields read as their defaults)."""
        t = record.get("alert_time")
        if t is None:
            t = record.get("ingest_time")
        self.times.append(float(t) if t is not None else math.nan)
        flags = set(record.get("flags") or [])
        preds = []
        for p in record.get("predictions") or []:
            model, label = str(p["model"]), str(p["label"])
            ood = bool(p.get("out_of_distribution", False))
            if ood:
                flags.add(FLAG_OOD)
            unc = p.get("uncertainty")
            preds.append((self._id(model), self._id(label), float(unc) if unc is not None else math.nan, ood,
                          p.get("correct")))
            labels = self.labels_by_model.setdefault(model, {})
            labels[label] = labels.get(label, 0) + 1
            self.versions.setdefault(model, set()).add(str(p.get("model_version", "?")))
        for f in flags:
            self.flag_counts[f] = self.flag_counts.get(f, 0) + 1
        self.flags.append(frozenset(self._id(f) for f in flags))
        self.preds.append(tuple(preds))

    def __len__(self) -> int:
        return len(self.times)

    # -- queries ------------------------------------------------------------------------------------------------
    def query(self, q: Query) -> tuple[int, list[int]]:
        """(total matching, ids of the requested page)."""
        order = self._ordering(q)
        start = (q.page - 1) * q.per_page
        return len(order), order[start:start + q.per_page]

    def _ordering(self, q: Query) -> list[int]:
        key = q.ordering_key()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        order = self._compute(q)
        with self._lock:
            self._cache[key] = order
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        return order

    def _compute(self, q: Query) -> list[int]:
        names = self._names
        missing = -1  # a name never seen matches nothing (not everything)
        model = names.get(q.model, missing) if q.model else None
        label = names.get(q.label, missing) if q.label else None
        flag = names.get(q.flag, missing) if q.flag else None
        lo = -math.inf if q.umin is None else q.umin
        hi = math.inf if q.umax is None else q.umax
        ranged = q.umin is not None or q.umax is not None  # NaN uncertainty is outside every range, not unranged
        per_pred = model is not None or label is not None or ranged or q.disagrees
        keys: list[tuple[float, int]] = []
        by_unc = q.sort == "uncertainty"
        for i, preds in enumerate(self.preds):
            if flag is not None and flag not in self.flags[i]:
                continue
            unc = math.nan
            if per_pred:
                chosen = [p for p in preds
                          if (model is None or p[0] == model) and (label is None or p[1] == label)
                          and (not ranged or lo <= p[2] <= hi) and (not q.disagrees or p[4] is False)]
                if not chosen:
                    continue
                if by_unc:
                    unc = max(p[2] for p in chosen)
            elif by_unc and preds:
                unc = max(p[2] for p in preds)
            keys.append((unc if by_unc else self.times[i], i))
        # NaN (no time, no prediction) always last, whichever the direction
        known = [k for k in keys if not math.isnan(k[0])]
        unknown = [k[1] for k in keys if math.isnan(k[0])]
        known.sort(reverse=q.descending)
        return [i for _, i in known] + unknown

    def facets(self) -> dict[str, Any]:
        """What the filter controls offer: models with their labels and versions, flags with counts."""
        return {"models": {m: {"labels": dict(sorted(labels.items())), "versions": sorted(self.versions[m])}
                           for m, labels in sorted(self.labels_by_model.items())},
                "flags": dict(sorted(self.flag_counts.items()))}


def build_index(records: Iterable[dict[str, Any]]) -> ResultIndex:
    index = ResultIndex()
    for rec in records:
        index.add(rec)
    return index
