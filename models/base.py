"""The one seam models implement: declare the input you need, load once, predict a batch.

Models never see Kafka, files or metrics. The engine routes packets by `InputSpec`, cuts the stamps to the
declared size with the shared preprocessing (`models.preprocess`), and hands the classifier a numpy batch.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from schemas.packet import Packet, StampKind

# ZTF's CCD plate scale: 1.01 arcsec/pixel for science, template and difference stamps.
ZTF_PIXEL_SCALE = 1.01


GEOMETRIES = ("exact", "crop", "resample", "resize")
#: NaN rules of a crop (`models.preprocess.fill_nan_by`): the finite median, or a masked saturated core -> the
#: finite maximum and other NaN -> the sky of the outer ring (star/galaxy 2.1.0 on, `models.stargal_recipe`).
NAN_FILLS = ("median", "core_max_ring_median")
#: Two pixel scales closer than this (relative) are the same grid: survey headers round differently.
PIXEL_SCALE_TOLERANCE = 0.02
TASKS = ("classification", "binary", "fractions", "regression")


def same_scale(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= PIXEL_SCALE_TOLERANCE * max(abs(a), abs(b))


@dataclass(frozen=True, slots=True)
class InputSpec:
    """What a classifier consumes, and so which packets the router sends it.

    Alert models stack stamp kinds (science, template, difference) as channels and may filter on the packet's
    band. Archival models (``channels`` set) stack the packet's per-band stamps in ``channels`` order.

    ``geometry`` says how a stamp may be brought to ``size`` x ``size`` (see docs/models.md):
    ``exact`` (must already match), ``crop`` (same pixel scale; centre crop / NaN pad), ``resample`` (zoom from
    the packet's pixel scale to ours, then crop / pad), ``resize`` (pixel scale ignored; whole stamp resized).
    A different pixel scale is never silently accepted by ``exact`` or ``crop``.
    """

    survey: str | tuple[str, ...]
    stamp_kinds: tuple[StampKind, ...] = (StampKind.SCIENCE,)
    size: int = 63
    pixel_scale: float | None = None  # arcsec / pixel; None: the model takes stamps resized from any scale
    bands: tuple[str, ...] | None = None  # alerts: accepted values of packet.band (None: any band)
    allow_crop: bool = True  # kept for the alert models of v1: False is geometry "exact"
    channels: tuple[str, ...] | None = None  # cutout packets: bands stacked as channels, in this order
    geometry: str | None = None
    nan_fill: str = "median"  # how NaN pixels of the crop are filled (NAN_FILLS)

    def __post_init__(self) -> None:
        if self.nan_fill not in NAN_FILLS:
            raise ValueError(f"unknown nan_fill '{self.nan_fill}' (choose from {', '.join(NAN_FILLS)})")
        if isinstance(self.survey, (list, tuple)):
            object.__setattr__(self, "survey", tuple(self.survey))
        geometry = self.geometry or ("crop" if self.allow_crop else "exact")
        if geometry not in GEOMETRIES:
            raise ValueError(f"unknown input geometry '{geometry}' (choose from {', '.join(GEOMETRIES)})")
        object.__setattr__(self, "geometry", geometry)
        object.__setattr__(self, "allow_crop", geometry != "exact")
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(self.channels))
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))
        object.__setattr__(self, "stamp_kinds", tuple(StampKind(k) for k in self.stamp_kinds))
        if geometry in ("crop", "resample") and self.channels is not None and self.pixel_scale is None:
            raise ValueError(f"geometry '{geometry}' needs the model's pixel_scale")

    @property
    def surveys(self) -> tuple[str, ...]:
        return self.survey if isinstance(self.survey, tuple) else (self.survey,)

    @property
    def n_channels(self) -> int:
        return len(self.channels) if self.channels is not None else len(self.stamp_kinds)

    def accepts(self, packet: Packet) -> bool:
        return self.reject_reason(packet) is None

    def reject_reason(self, packet: Packet) -> str | None:
        """None when the packet fits this input, else why not (for logs and tests)."""
        if packet.survey not in self.surveys:
            return f"survey {packet.survey} not in {self.surveys}"
        if self.channels is None:
            if self.bands is not None and packet.band not in self.bands:
                return f"band {packet.band} not in {self.bands}"
            missing = [k.value for k in self.stamp_kinds if k not in packet.stamps]
            return f"no {', '.join(missing)} stamp" if missing else None
        missing = [b for b in self.channels if b not in packet.band_stamps]
        if missing:
            return f"no stamp in band(s) {', '.join(missing)}"
        if self.geometry == "resize":
            return None
        if self.geometry == "resample":
            return None if packet.pixel_scale is not None else "packet has no pixel scale to resample from"
        if not same_scale(packet.pixel_scale, self.pixel_scale):
            return f"pixel scale {packet.pixel_scale} is not the model's {self.pixel_scale}"
        if self.geometry == "exact":
            for band in self.channels:
                shape = packet.band_stamps[band].shape
                if shape is not None and shape != (self.size, self.size):
                    return f"{band} stamp is {shape[0]}x{shape[1]}, model needs exactly {self.size}x{self.size}"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"survey": list(self.surveys), "stamp_kinds": [k.value for k in self.stamp_kinds], "size": self.size,
                "pixel_scale": self.pixel_scale, "bands": list(self.bands) if self.bands else None,
                "channels": list(self.channels) if self.channels is not None else None,
                "geometry": self.geometry, **({"nan_fill": self.nan_fill} if self.nan_fill != "median" else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        known = {"survey", "stamp_kinds", "size", "pixel_scale", "bands", "channels", "geometry", "allow_crop",
                 "nan_fill"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown input_spec keys: {', '.join(sorted(unknown))}")
        kw = dict(d)
        if "stamp_kinds" in kw:
            kw["stamp_kinds"] = tuple(StampKind(k) for k in kw["stamp_kinds"])
        for key in ("bands", "channels"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        survey = kw.get("survey")
        if isinstance(survey, list):
            kw["survey"] = tuple(survey)
        return cls(**kw)


@dataclass(slots=True)
class BatchPrediction:
    """Predictions for a batch of N inputs over K classes.

    ``uncertainty`` is model-specific but always "bigger is less sure" (docs/models.md gives each model's meaning
    and scale): posterior variance for GPs; for CNNs with an uncertainty block, 1 - the calibrated probability of
    the label (classifiers) or the calibrated predictive standard deviation (regression, vote fractions); for CNNs
    without one, the entropy of the outputs (classifiers) or 0, "not estimated" (regression).
    ``out_of_distribution`` (N,) bool marks inputs the model's stored rule places outside its training data;
    None means the model has no such rule (nothing flagged). Flags never change labels or probabilities.
    """

    labels: list[str]
    probabilities: np.ndarray  # (N, K), rows sum to 1 for classifiers
    uncertainty: np.ndarray    # (N,)
    classes: tuple[str, ...]
    task: str = "classification"  # regression: ``probabilities`` holds the raw outputs, named by ``classes``
    out_of_distribution: np.ndarray | None = None  # (N,) bool, from the artifact's OOD rule

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.probabilities.shape != (n, len(self.classes)) or self.uncertainty.shape != (n,):
            raise ValueError(f"inconsistent prediction shapes: {n} labels, probabilities {self.probabilities.shape}, "
                             f"uncertainty {self.uncertainty.shape}, {len(self.classes)} classes")
        if self.out_of_distribution is not None and np.shape(self.out_of_distribution) != (n,):
            raise ValueError(f"out_of_distribution has shape {np.shape(self.out_of_distribution)}, expected ({n},)")


@dataclass(slots=True)
class ModelInfo:
    """Metadata JSON of a registry artifact (see `models.registry`)."""

    name: str
    version: str
    family: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)


class Classifier(abc.ABC):
    """Base class for every served model. Subclasses are loaded once per worker via `load`."""

    family: ClassVar[str]

    def __init__(self, info: ModelInfo):
        self.info = info

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def version(self) -> str:
        return self.info.version

    @property
    @abc.abstractmethod
    def input_spec(self) -> InputSpec: ...

    @property
    @abc.abstractmethod
    def classes(self) -> tuple[str, ...]: ...

    @classmethod
    @abc.abstractmethod
    def load(cls, info: ModelInfo) -> "Classifier":
        """Load weights from ``info.path`` without pickle (npz with allow_pickle=False, JSON, .keras safe mode)."""

    @abc.abstractmethod
    def predict_batch(self, batch: np.ndarray) -> BatchPrediction:
        """Predict a batch shaped (N, size, size, len(stamp_kinds)) float32, NaN already handled."""
