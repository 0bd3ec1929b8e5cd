"""FR-DEEP FIRST -> NVSS transfer experiment (Tang, Scaife & Leahy 2019): ``python -m training.radio transfer
FRDEEP_DIR OUT_ROOT [--epochs N] [--seeds 0,1,2] [--freeze N] [--extra-source MODEL] [--sources-from ROOT]``.

Every arm is an ordinary ``stampflow train radio`` run (the equivalent commands are recorded in the result).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.errors import StampflowError
from training.family import TrainOptions, say
from training.radio.network import AUGMENT
from training.radio.options import RadioOptions
from training.radio.train import DEFAULT_LR, train


def transfer_experiment(frdeep: Path, out_root: Path, *, seeds: tuple[int, ...] = (0, 1, 2), epochs: int = 20,
                        freeze: int = 2, learning_rate: float = DEFAULT_LR, batch_size: int = 32,
                        extra_sources: tuple[str, ...] = (), sources_from: Path | None = None) -> dict[str, Any]:
    """FIRST -> NVSS on FR-DEEP (Tang et al. 2019) against NVSS alone, with the same budget.

    Per seed: (1) a source FRI/FRII model trained on FR-DEEP FIRST (its 'test' part scored too); (2) NVSS from
    scratch; (3) NVSS fine-tuned from the source with its first ``freeze`` weighted layers frozen; plus one
    fine-tuned arm per model in ``extra_sources`` (e.g. the bundled 4-class ``radio-first``). Every NVSS arm
    sees the same fit/validation/test images (same seed), the same epochs (fixed: no early stopping),
    optimiser, schedule, batch size and augmentation; all are scored on the 50-image FR-DEEP NVSS test part.
    ``sources_from``: reuse the FR-DEEP FIRST source models of an earlier run (``<root>/radio-frdeep-first/
    1.0.<seed>``) instead of training them, so a smaller NVSS budget starts from the same sources.
    """
    import statistics

    frdeep, out_root = Path(frdeep), Path(out_root)
    common = {"patience": "0"}
    runs: list[dict[str, Any]] = []
    commands: list[str] = []

    def run(arm: str, seed: int, dataset: str, name: str, from_model: str | None = None, fz: int | None = None):
        extra = {**common, "dataset": dataset, "name": name}
        opts = TrainOptions(data=frdeep, epochs=epochs, batch_size=batch_size, seed=seed, from_model=from_model,
                            freeze=fz, out_root=out_root, version=f"1.0.{seed}", learning_rate=learning_rate)
        cmd = (f"stampflow train radio --data {frdeep} --epochs {epochs} --batch-size {batch_size} --seed {seed} "
               f"--learning-rate {learning_rate} --out {out_root} --version 1.0.{seed}"
               + (f" --from {from_model} --freeze {fz}" if from_model else "")
               + "".join(f" --set {k}={v}" for k, v in extra.items()))
        commands.append(cmd)
        say(f"transfer experiment: {arm}, seed {seed}")
        res = train(opts, RadioOptions.model_validate(extra))
        m = res["metrics"]
        runs.append({"arm": arm, "seed": seed, "name": name, "artifact": res["artifact"],
                     "test_accuracy": m["test_accuracy"], "test_accuracy_ci95": m["test_accuracy_ci95"],
                     "test_n": m["test"]["n"], "per_class": m["test"]["per_class"],
                     "confusion_matrix": m["test"]["confusion_matrix"]["matrix"],
                     "validation_accuracy": m["validation"]["accuracy"], "epochs_run": res["epochs_run"],
                     "train_images_per_s": res["train_images_per_s"], "seconds": res["seconds"]})
        return res

    for seed in seeds:
        if sources_from is not None:
            src_dir = Path(sources_from) / "radio-frdeep-first" / f"1.0.{seed}"
            if not (src_dir / "metadata.json").is_file():
                raise StampflowError(f"no source model {src_dir} to reuse")
            src = {"artifact": str(src_dir)}
            meta = json.loads((src_dir / "metadata.json").read_text())
            runs.append({"arm": "source: FR-DEEP FIRST (reused)", "seed": seed, "name": meta["name"],
                         "artifact": str(src_dir), "test_accuracy": meta["metrics"]["test_accuracy"],
                         "test_accuracy_ci95": meta["metrics"]["test_accuracy_ci95"],
                         "test_n": meta["metrics"]["test"]["n"], "epochs_run": meta["training"]["epochs_run"]})
        else:
            src = run("source: FR-DEEP FIRST", seed, "frdeep-first", "radio-frdeep-first")
        run("NVSS from scratch", seed, "frdeep-nvss", "radio-nvss-scratch")
        run(f"NVSS fine-tuned from FR-DEEP FIRST (freeze {freeze})", seed, "frdeep-nvss", "radio-nvss-transfer",
            src["artifact"], freeze)
        for k_, spec in enumerate(extra_sources):
            run(f"NVSS fine-tuned from {spec} (freeze {freeze})", seed, "frdeep-nvss", f"radio-nvss-transfer{k_ + 2}",
                spec, freeze)

    summary: dict[str, Any] = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        accs = [r["test_accuracy"] for r in mine]
        summary[arm] = {"seeds": [r["seed"] for r in mine], "test_accuracy": accs,
                        "mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0}
        vals = [r["validation_accuracy"] for r in mine if "validation_accuracy" in r]
        if vals:
            summary[arm]["validation_accuracy"] = vals
            summary[arm]["validation_mean"] = statistics.fmean(vals)
    result = {"experiment": "FR-DEEP FIRST -> NVSS transfer vs NVSS alone (same budget)",
              "sources_from": None if sources_from is None else str(sources_from),
              "data": str(frdeep.resolve()),
              "test_set": "FR-DEEP NVSS published test batch (50 images: 22 FRI, 28 FRII)",
              "budget": {"epochs": epochs, "early_stopping": False, "batch_size": batch_size, "optimizer": "Adam",
                         "learning_rate": learning_rate, "schedule": "cosine decay to 5%", "freeze": freeze,
                         "augmentation": AUGMENT, "class_weight": "balanced", "val_fraction": 0.15},
              "seeds": list(seeds), "summary": summary, "runs": runs, "commands": commands}
    (out_root / "radio_transfer.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m training.radio transfer",
                                description="FR-DEEP FIRST -> NVSS transfer experiment (see transfer_experiment)")
    p.add_argument("frdeep", type=Path, help="directory holding FIRST_/NVSS_PNG_dataset.tar.gz")
    p.add_argument("out", type=Path, help="registry root for the experiment's artifacts and radio_transfer.json")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--freeze", type=int, default=2)
    p.add_argument("--extra-source", action="append", default=[], help="another source model, e.g. radio-first@1.0.0")
    p.add_argument("--sources-from", type=Path, help="reuse the FR-DEEP FIRST sources of an earlier run's root")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    res = transfer_experiment(a.frdeep, a.out, epochs=a.epochs, seeds=tuple(int(s) for s in a.seeds.split(",")),
                              freeze=a.freeze, extra_sources=tuple(a.extra_source), sources_from=a.sources_from)
    print(json.dumps(res["summary"], indent=2))
