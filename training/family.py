"""The `Family` seam: one object per model family, and the typed options every family's training takes.

A family declares everything ``stampflow train / evaluate / replay --format`` needs to know about it:
its architecture builder, the serving class that loads its artifacts, its dataset readers, its archive
(replay) formats and its ``--set`` options as a pydantic model. The one registry of families is
`training/families.py`; `docs/families.md` walks through adding a sixth.

Nothing here imports TensorFlow or GalSim: a family package must stay cheap to import, so listing families
(or replaying an archive) never pays for a deep-learning start-up. Heavy imports sit inside the functions.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from models.base import Classifier, ModelInfo
from models.registry import BUNDLED_ROOT
from schemas.cutout_packet import Cutout
from schemas.errors import StampflowError


def say(msg: str, *, quiet: bool = False) -> None:
    """The one progress line writer: stderr, because stdout carries the JSON result of train/evaluate."""
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


class TrainOptions(BaseModel):
    """The options every ``stampflow train FAMILY`` takes (command-line flags); family ones go in `FamilyOptions`."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    data: Path = Field(description="The training data: a directory or archive in the family's published format.")
    epochs: int | None = Field(None, ge=1, description="Training epochs; None: the family's default.")
    batch_size: int | None = Field(None, ge=1, description="Images per step; None: the family's default.")
    seed: int = Field(0, description="Seeds the split, the weights and the augmentation, for reproducible runs.")
    from_model: str | None = Field(None, description="Transfer learning: start from this model (name[@version] "
                                                     "or artifact path).")
    freeze: int | None = Field(None, ge=0, description="With from_model: freeze the first N weighted layers.")
    out_root: Path | None = Field(None, description="Registry root the new artifact is written to; None: bundled.")
    version: str | None = Field(None, description="Artifact version; None: the next free one.")
    mixed_precision: bool = Field(False, description="float16 compute on a GPU (ignored on the CPU).")
    learning_rate: float | None = Field(None, gt=0, description="Initial learning rate; None: the family's default.")

    @property
    def registry_root(self) -> Path:
        return Path(self.out_root) if self.out_root else BUNDLED_ROOT


class FamilyOptions(BaseModel):
    """Base of every family's ``--set key=value`` options: unknown keys are refused, every field is documented."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_options(options: type[FamilyOptions], pairs: Mapping[str, str], *, family: str,
                  command: str = "train") -> FamilyOptions:
    """``--set key=value`` pairs validated against a family's options model; one clear line for any mistake."""
    try:
        return options.model_validate(dict(pairs))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err.get("loc", ())
        key = str(loc[0]) if loc else "?"  # the --set key, also when one item of a list option is wrong
        if err.get("type") == "extra_forbidden":
            known = ", ".join(options.model_fields) or "none"
            raise StampflowError(f"--set {key}: unknown {command} option for family '{family}' "
                                 f"(known: {known})") from None
        raw = pairs.get(key, "")
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")  # a validator's own words
        raise StampflowError(f"--set {key}={raw}: {msg}") from None


def parse_fractions(raw: str | tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    """``0.7,0.15,0.15``: train/validation/test parts, three positive fractions summing to 1."""
    if isinstance(raw, str):
        try:
            raw = [float(v) for v in raw.split(",")]
        except ValueError:
            raise ValueError("expected three fractions, e.g. 0.7,0.15,0.15") from None
    fr = tuple(float(v) for v in raw)
    if len(fr) != 3 or any(f <= 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise ValueError("three positive fractions (train,val,test) summing to 1")
    return fr  # type: ignore[return-value]


def split_csv(raw: Any) -> Any:
    """``a,b,c`` from ``--set`` -> ``["a", "b", "c"]`` (blank items dropped); lists and tuples pass through."""
    if isinstance(raw, str):
        return [v.strip() for v in raw.split(",") if v.strip()]
    return raw


# A list option from --set: ``Annotated[tuple[int, ...], Csv]`` reads "0,16,40"; items are then validated.
Csv = BeforeValidator(split_csv)

# A ``fractions`` option field: ``Field((0.7, 0.15, 0.15), description=...)`` typed as `Fractions` accepts
# "0.7,0.15,0.15" from --set and refuses anything that is not three positive parts summing to 1.
Fractions = Annotated[tuple[float, float, float], BeforeValidator(parse_fractions)]


@dataclass(frozen=True)
class ArchiveFormat:
    """A published archival format that ``stampflow replay --format NAME`` turns into cutout packets."""

    name: str                                         # the --format value
    description: str                                  # one line for --help
    reader: Callable[..., Iterator[Cutout]]           # reader(path, **options) -> cutouts
    fixed: Mapping[str, Any] = field(default_factory=dict)  # options this format always passes to the reader

    def read(self, path: Path, **options: Any) -> Iterator[Cutout]:
        return self.reader(Path(path), **{**options, **self.fixed})


@dataclass(frozen=True)
class Family:
    """One model family: what it builds, what serves it, what it reads, how it trains and evaluates."""

    name: str                                                    # `stampflow train NAME`, metadata "family"
    summary: str                                                 # one line for `stampflow train --help`
    serving: type[Classifier]                                    # loads and serves this family's artifacts
    build: Callable[..., Any]                                    # the architecture builder
    options: type[FamilyOptions]                                 # its --set options
    train: Callable[[TrainOptions, Any], dict[str, Any]]         # train(opts, family_options) -> summary
    evaluate: Callable[[ModelInfo, Path, Any], dict[str, Any]]   # evaluate(info, data, family_options)
    readers: Mapping[str, Callable[..., Any]] = field(default_factory=dict)  # dataset name -> loader
    archives: tuple[ArchiveFormat, ...] = ()                     # replay formats it owns
    mock_trained: bool = False                                   # its bundled artifacts learned from mock images
    # `stampflow evaluate`'s --set options; the base class takes none (train and evaluate options differ:
    # an option evaluate would ignore is refused, not silently dropped)
    evaluate_options: type[FamilyOptions] = FamilyOptions
    # evaluate_alerts(info, alert paths, evaluate options): score on real alert packets against a reference
    # the packets themselves carry (stargal: PS1); None for families without alert-borne references.
    evaluate_alerts: Callable[[ModelInfo, Sequence[Path], Any], dict[str, Any]] | None = None

    def parse(self, pairs: Mapping[str, str]) -> FamilyOptions:
        """``stampflow train``'s ``--set`` pairs as this family's typed options."""
        return parse_options(self.options, pairs, family=self.name)

    def parse_evaluate(self, pairs: Mapping[str, str]) -> FamilyOptions:
        """``stampflow evaluate``'s ``--set`` pairs as this family's typed evaluation options."""
        return parse_options(self.evaluate_options, pairs, family=self.name, command="evaluate")
