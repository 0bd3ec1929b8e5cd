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

from stream.packet import Packet, StampKind

# ZTF's CCD plate scale: 1.01 arcsec/pixel for science, template and difference stamps.
ZTF_PIXEL_SCALE = 1.01


@dataclass(frozen=True, slots=True)
class InputSpec:
    """What a classifier consumes.

    ``size`` is the side of the square stamp the model takes. ``resample`` says whether the router may crop or
    pad a stamp of the same pixel scale to that size (a centre crop keeps the pixel scale, so it is allowed by
    default); a different pixel scale is never silently accepted.
    """

    survey: str
    stamp_kinds: tuple[StampKind, ...]
    size: int
    pixel_scale: float  # arcsec / pixel
    bands: tuple[str, ...] | None = None  # None: any band
    allow_crop: bool = True

    def accepts(self, packet: Packet) -> bool:
        if packet.survey != self.survey:
            return False
        if self.bands is not None and packet.band not in self.bands:
            return False
        return all(kind in packet.stamps for kind in self.stamp_kinds)

    def as_dict(self) -> dict[str, Any]:
        return {"survey": self.survey, "stamp_kinds": [k.value for k in self.stamp_kinds], "size": self.size,
                "pixel_scale": self.pixel_scale, "bands": list(self.bands) if self.bands else None,
                "allow_crop": self.allow_crop}


@dataclass(slots=True)
class BatchPrediction:
    """Predictions for a batch of N inputs over K classes.

    ``uncertainty`` is model-specific but always "bigger is less sure": posterior variance for GPs,
    predictive entropy for softmax CNNs.
    """

    labels: list[str]
    probabilities: np.ndarray  # (N, K), rows sum to 1 for classifiers
    uncertainty: np.ndarray    # (N,)
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.probabilities.shape != (n, len(self.classes)) or self.uncertainty.shape != (n,):
            raise ValueError(f"inconsistent prediction shapes: {n} labels, probabilities {self.probabilities.shape}, "
                             f"uncertainty {self.uncertainty.shape}, {len(self.classes)} classes")


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
