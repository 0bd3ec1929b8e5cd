"""Code version stamped on every result and model artifact: package version plus the git commit when known."""
from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    try:
        version = metadata.version("stampflow")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    if (REPO_ROOT / ".git").exists():
        try:
            sha = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
                                 capture_output=True, text=True, timeout=5, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return f"{version}+g{sha}{'.dirty' if dirty else ''}"
        except (OSError, subprocess.SubprocessError):
            pass
    return version
