"""The out-of-distribution rule on real radio stamps (issue 10 §2): NVSS stamps given to the FIRST model are
flagged, FIRST stamps (the Griese `valid` part and FR-DEEP's independent FIRST cut-outs) are not.

The block is fitted here on a copy of ``radio-first@1.0.0`` (its weights untouched) from Griese `train` stamps,
read through the radio family's own readers. NVSS (15"/px) images only look like FIRST (1.8"/px) ones to a
point: the beam is ~3 px in both, and most NVSS fields hold a compact source at the centre. What gives them
away is the crowded field around it, so about a third are flagged (37% of 300 here), while FIRST stamps stay
near the 1% the threshold allows (2.0% of `valid`, 4.3% of FR-DEEP FIRST). The router never sends a 15"/px stamp to this model in the first place (geometry ``crop``).
"""
from __future__ import annotations

import numpy as np
import pytest

from models.base import InputSpec
from models.preprocess import prepare_images
from models.registry import BUNDLED_ROOT, Registry, read_metadata
from training.evaluation import stratified_split_fractions
from training.radio.data import load_radio
from training.uncertainty import release_with_uncertainty

N_FRDEEP = 300


@pytest.fixture(scope="module")
def radio(data_dir, tmp_path_factory):
    source = BUNDLED_ROOT / "radio-first" / "1.0.0"
    spec = InputSpec.from_dict(read_metadata(source)["input_spec"])
    root = data_dir / "radio"
    griese = load_radio(root / "first_galaxy_dataset" / "galaxy_data_trainvalid_h5.zip", "griese",
                        split="train,valid")
    train = np.flatnonzero(griese.splits == "train")
    valid = np.flatnonzero(griese.splits == "valid")
    fit_part, val_part = (train[p] for p in stratified_split_fractions(griese.labels[train], (0.85, 0.15), 0))
    stamps = lambda images: prepare_images(images, spec)  # noqa: E731 - geometry only; the recipe is served
    out = tmp_path_factory.mktemp("radio-ood")
    path = release_with_uncertainty(source, "1.0.0-ood", out_root=out, say=lambda *_: None,
                                    x_fit=stamps(griese.images[fit_part]), x_val=stamps(griese.images[val_part]),
                                    y_val=griese.labels[val_part])
    pick = np.random.default_rng(1).permutation(600)[:N_FRDEEP]
    first = load_radio(root / "frdeep" / "FIRST_PNG_dataset.tar.gz", "frdeep-first")
    nvss = load_radio(root / "frdeep" / "NVSS_PNG_dataset.tar.gz", "frdeep-nvss")
    clf = Registry([out]).load("radio-first@1.0.0-ood")
    flagged = {name: float(np.mean(clf.predict_batch(stamps(images)).out_of_distribution))
               for name, images in [("griese valid", griese.images[valid]), ("frdeep FIRST", first.images[pick]),
                                    ("NVSS", nvss.images[pick])]}
    print(f"radio-first 1.0.0 + block, flagged share: {flagged}")
    return {"flagged": flagged, "path": path, "valid": stamps(griese.images[valid][::10]),
            "nvss": stamps(nvss.images[pick])}


def test_nvss_stamps_are_flagged_for_the_first_model(radio):
    flagged = radio["flagged"]
    assert flagged["NVSS"] >= 0.25, flagged
    assert flagged["NVSS"] >= 4 * max(flagged["griese valid"], flagged["frdeep FIRST"]), flagged


def test_first_stamps_are_not_flagged(radio):
    flagged = radio["flagged"]
    assert flagged["griese valid"] <= 0.06, flagged
    assert flagged["frdeep FIRST"] <= 0.08, flagged


def test_the_source_artifact_is_untouched(radio):
    meta = read_metadata(BUNDLED_ROOT / "radio-first" / "1.0.0")
    assert "ood" not in meta and "calibration" not in meta
    assert read_metadata(radio["path"])["derived_from"]["model"] == "radio-first@1.0.0"


def test_the_served_default_is_1_0_0_with_the_rule_and_its_own_probabilities(radio):
    """radio-first 1.1.0 (the default): 1.0.0's weights, the OOD rule, and T = 1 set by hand with its reason, so
    its probabilities are 1.0.0's; it flags NVSS stamps and few Griese `valid` ones."""
    reg = Registry()
    info = reg.resolve("radio-first")
    assert info.version == "1.1.0" and info.metadata["derived_from"]["model"] == "radio-first@1.0.0"
    cal = info.metadata["calibration"]
    assert cal["temperature"] == 1.0 and cal["fitted"] is False and "valid" in cal["meaning"]
    new, old = reg.load("radio-first"), reg.load("radio-first@1.0.0")
    p_new, p_old = new.predict_batch(radio["valid"]), old.predict_batch(radio["valid"])
    np.testing.assert_allclose(p_new.probabilities, p_old.probabilities, atol=1e-5)
    assert p_new.labels == p_old.labels and p_old.out_of_distribution is None
    assert np.mean(p_new.out_of_distribution) <= 0.1
    assert np.mean(new.predict_batch(radio["nvss"]).out_of_distribution) >= 0.25
