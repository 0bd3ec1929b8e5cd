"""The Family seam: one registry of five families, typed ``--set`` options, one clear line for a mistake."""
from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import BaseModel

from schemas.errors import StampflowError
from stream.cli import main
from training.families import FAMILIES, archive_formats, family
from training.family import ArchiveFormat, Family, FamilyOptions


def test_registry_lists_five_families():
    assert [f.name for f in FAMILIES] == ["stargal", "radio", "deepmerge", "morphology", "spin"]
    assert all(isinstance(f, Family) for f in FAMILIES)
    assert family("radio") is FAMILIES[1]
    with pytest.raises(StampflowError, match="unknown model family 'lofar'.*stargal, radio"):
        family("lofar")


def test_every_replay_format_has_one_owner():
    formats = archive_formats()
    assert set(formats) == {"griese", "frdeep", "mirabest", "radio-fits", "deepmerge", "candels", "clash",
                            "sdss-spin", "ztf-stargal"}
    owners = {fmt.name: f.name for f in FAMILIES for fmt in f.archives}
    assert owners["ztf-stargal"] == "stargal" and owners["griese"] == "radio"
    assert all(isinstance(fmt, ArchiveFormat) and fmt.description for fmt in formats.values())


def _option_models() -> list[tuple[str, type[BaseModel]]]:
    return [(f"{f.name}:{kind}", model) for f in FAMILIES
            for kind, model in (("train", f.options), ("evaluate", f.evaluate_options))]


@pytest.mark.parametrize("name,model", _option_models(), ids=[n for n, _ in _option_models()])
def test_options_forbid_extras_and_document_every_field(name, model):
    assert issubclass(model, FamilyOptions)
    assert model.model_config.get("extra") == "forbid", name
    for field_name, info in model.model_fields.items():
        assert info.description and len(info.description) > 10, f"{name}.{field_name} has no description"
    model()  # every option has a default: ``stampflow train FAMILY --data D`` needs no --set


def test_family_packages_import_no_deep_learning():
    """Listing families (help text, replay formats) must not pay for TensorFlow, GalSim or MuyGPyS."""
    code = ("import sys; import training.families; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'galsim', 'MuyGPyS')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_serving_cli_never_imports_training():
    code = ("import sys; from stream.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'training'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_set_unknown_key_is_one_clear_line(tmp_path, capsys):
    rc = main(["train", "stargal", "--data", str(tmp_path), "--set", "nn_cuont=5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("stampflow: --set nn_cuont: unknown train option for family 'stargal' (known: ")
    assert "nn_count" in err[0]


def test_set_bad_value_is_one_clear_line(tmp_path, capsys):
    rc = main(["train", "radio", "--data", str(tmp_path), "--set", "val_fraction=lots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("stampflow: --set val_fraction=lots: ")
    rc = main(["train", "stargal", "--data", str(tmp_path), "--set", "kernel=cosine"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--set kernel=cosine: " in err[0] and "matern" in err[0]


def test_evaluate_unknown_key_names_the_command(data_dir, capsys):
    rc = main(["evaluate", "stargal", "--data", str(data_dir / "ztf_stargal" / "cutouts"), "--set", "splt=all"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["stampflow: --set splt: unknown evaluate option for family 'stargal' "
                               "(known: batch_size, max_distance, star_min, galaxy_max, out_dir, gallery)"]


def test_bad_train_flag_is_one_clear_line(tmp_path, capsys):
    rc = main(["train", "radio", "--data", str(tmp_path), "--epochs", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("stampflow: --epochs 0: ")


def test_help_lists_families_and_formats_from_the_registry(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps help at hyphens ("sdss-" / "spin") on narrow terminals
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "stargal, radio, deepmerge, morphology or spin" in " ".join(out.split())
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "ztf-stargal" in out and "griese" in out and "sdss-spin" in out
