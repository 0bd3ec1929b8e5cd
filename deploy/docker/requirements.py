"""Writes the pip requirement list for one image target from pyproject.toml, so the images never drift from it.

    python requirements.py cpu|gpu [PYPROJECT] > requirements.txt

cpu: the project's dependencies as pinned, plus the `codecs` extra (zstd-compressed archives reach the replay
job). gpu: the same, with tensorflow-cpu swapped for the TensorFlow build that carries the CUDA wheels, at the
same version spec. Both packages install into the same `tensorflow/` directory, so they cannot coexist: the gpu
image installs this list and then the stampflow wheel with --no-deps.
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

TARGETS = ("cpu", "gpu")
EXTRAS = ("codecs",)
CPU_TF = "tensorflow-cpu"
GPU_TF = "tensorflow[and-cuda]"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_name(req: str) -> str:
    match = _NAME.match(req)
    if not match:
        raise ValueError(f"cannot parse requirement {req!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(target: str, pyproject: Path) -> list[str]:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (known: {', '.join(TARGETS)})")
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += project["optional-dependencies"][extra]
    if target == "gpu":
        swapped = [GPU_TF + r[len(CPU_TF):] for r in reqs if requirement_name(r) == CPU_TF]
        if len(swapped) != 1:
            raise ValueError(f"{pyproject} must pin {CPU_TF} exactly once to derive the gpu requirements")
        reqs = [r for r in reqs if requirement_name(r) != CPU_TF] + swapped
    return reqs


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    pyproject = Path(argv[2]) if len(argv) == 3 else Path("pyproject.toml")
    print("\n".join(requirements(argv[1], pyproject)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
