"""``python -m training.morphology mock --labels DIR --out DIR``: mock CANDELS/CLASH stamps for the real label rows
(`training.morphology.mock_files.main`)."""
from training.morphology.mock_files import main

if __name__ == "__main__":
    raise SystemExit(main())
