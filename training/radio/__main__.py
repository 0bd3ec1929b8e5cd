"""``python -m training.radio transfer ...``: the FR-DEEP FIRST -> NVSS transfer experiment
(`training.radio.transfer`)."""
import sys

from training.radio.transfer import main

if len(sys.argv) < 2 or sys.argv[1] != "transfer":
    raise SystemExit("usage: python -m training.radio transfer FRDEEP_DIR OUT_ROOT [--epochs N] [--seeds 0,1,2] "
                     "[--freeze N] [--extra-source MODEL] [--sources-from ROOT]")
main(sys.argv[2:])
