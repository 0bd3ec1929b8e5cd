"""Shared fixtures. Real data is read through STAMPFLOW_DATA (default ../shared/data next to the repo)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def data_root() -> Path:
    from stream.config import data_root as configured_root  # the one reader of STAMPFLOW_DATA

    return configured_root()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not root.is_dir():
        pytest.fail(f"STAMPFLOW_DATA={root} does not exist; the suite needs the shared real data")
    return root


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
