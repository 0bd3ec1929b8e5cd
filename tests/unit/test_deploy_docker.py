"""deploy/docker: the Dockerfile lints clean, every file it copies reaches the build context and exists, what
it runs exists, the wheel stage's work succeeds on exactly the files the context holds, and the HEALTHCHECK
command really tells a live worker from a stuck or absent one. No Docker engine needed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "tools"))
import dockerfile_check as dc  # noqa: E402

sys.path.insert(0, str(REPO / "deploy" / "docker"))
import requirements as image_requirements  # noqa: E402

RUNTIME_TARGETS = ("cpu", "gpu")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> dc.Dockerfile:
    return dc.parse_dockerfile()


@pytest.fixture(scope="module")
def ignore() -> list[dc.IgnorePattern]:
    return dc.read_dockerignore()


# --------------------------------------------------------------------------------------------------- hadolint
def test_hadolint_reports_nothing_at_any_level():
    findings = dc.hadolint()
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} ({f['level']}) {f['message']}" for f in findings)


def test_hadolint_really_runs_and_flags(tmp_path):
    # The same Dockerfile without its one justified pragma, plus a classic mistake: both must be reported.
    text = "\n".join(line for line in dc.DOCKERFILE.read_text().splitlines() if "hadolint ignore" not in line)
    bad = tmp_path / "Dockerfile"
    bad.write_text(text + "\nRUN pip install requests\n")
    codes = {f["code"] for f in dc.hadolint(bad)}
    assert {"DL3008", "DL3013"} <= codes, codes


def test_every_hadolint_ignore_is_justified():
    lines = dc.DOCKERFILE.read_text().splitlines()
    for n, line in enumerate(lines):
        if "hadolint ignore=" in line:
            rules = line.split("hadolint ignore=", 1)[1].split(",")
            # the reason sits within the next few comment lines after the instruction it covers
            nearby = " ".join(lines[max(0, n - 3): n + 8])
            for rule in rules:
                assert nearby.count(rule.strip()) >= 2, f"line {n + 1}: {rule} ignored without a reason naming it"


# ----------------------------------------------------------------------------------------------------- stages
def test_targets_and_stage_graph(dockerfile):
    names = [s.name for s in dockerfile.stages]
    assert len(names) == len(set(names)), names
    for target in RUNTIME_TARGETS:
        assert target in names
    for stage in dockerfile.stages:
        assert ":" in stage.base or stage.base in names, f"{stage.name}: base {stage.base!r} has no tag"
        assert not stage.base.endswith(":latest"), stage.base
        for ins in stage.all("COPY"):
            src_stage = ins.flags.get("from")
            if src_stage is not None:
                assert src_stage in names[: names.index(stage.name)], f"{stage.name}: COPY --from={src_stage}"


def test_cpu_is_slim_python_311_and_gpu_is_cuda(dockerfile):
    cpu_base = dockerfile.ancestry("cpu")[-1].base
    gpu_base = dockerfile.ancestry("gpu")[-1].base
    assert cpu_base.startswith("python:3.11") and "slim" in cpu_base, cpu_base
    assert gpu_base.startswith("nvidia/cuda:"), gpu_base
    # the gpu venv is built on the interpreter it runs on (a venv is not relocatable between Pythons)
    assert dockerfile.stage("venv-gpu").base == dockerfile.stage("gpu").base == "gpu-base"
    assert dockerfile.stage("venv-cpu").base == dockerfile.stage("cpu").base == cpu_base
    gpu_python = " ".join(i.value for i in dockerfile.stage("gpu-base").all("RUN"))
    assert "python3.11" in gpu_python and "python3.11 -m venv" in " ".join(
        i.value for i in dockerfile.stage("venv-gpu").all("RUN"))


def test_runtime_stages_are_non_root_and_alike(dockerfile):
    shapes = {}
    for target in RUNTIME_TARGETS:
        stage = dockerfile.stage(target)
        args = {i.value.split("=")[0]: i.value.split("=", 1)[1] for i in stage.all("ARG") if "=" in i.value}
        user = dc.substitute(stage.all("USER")[-1].value, args)
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and int(uid) != 0, user  # numeric, so runAsNonRoot can verify it
        assert gid.isdigit() and int(gid) != 0, user
        env = stage.env()
        assert env["STAMPFLOW_METRICS__HOST"] == "0.0.0.0"
        assert json.loads(env["STAMPFLOW_MODELS__ARTIFACT_DIRS"]) == ["/opt/stampflow/models"]
        assert env["PATH"].startswith("/opt/venv/bin:")
        copies = [dc.copy_sources(i) for i in stage.all("COPY")]
        assert (["models/artifacts/"], "/opt/stampflow/models/") in copies
        assert any(src == ["/opt/venv"] for src, _ in copies)
        shapes[target] = (user, stage.all("HEALTHCHECK")[-1].value, stage.all("ENTRYPOINT")[-1].value,
                          stage.all("CMD")[-1].value, [i.value for i in stage.all("EXPOSE")])
    assert shapes["cpu"] == shapes["gpu"]
    assert dockerfile.stage("gpu").env()["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"


def test_image_environment_is_valid_stampflow_config(dockerfile, monkeypatch):
    from stream.config import load_settings

    for name in [n for n in os.environ if n.startswith("STAMPFLOW_")]:
        monkeypatch.delenv(name)
    for target in RUNTIME_TARGETS:
        for key, value in dockerfile.stage(target).env().items():
            if key.startswith("STAMPFLOW_"):
                monkeypatch.setenv(key, value)
        settings = load_settings()
        assert settings.metrics.host == "0.0.0.0"
        assert [str(p) for p in settings.models.artifact_dirs] == ["/opt/stampflow/models"]


def test_baked_models_are_registry_roots():
    # COPY models/artifacts/ /opt/stampflow/models/ must give the <name>/<version>/metadata.json layout.
    from models.registry import Registry, read_metadata

    metas = sorted((REPO / "models" / "artifacts").glob("*/*/metadata.json"))
    assert metas, "no bundled model artifacts to bake into the image"
    for meta in metas:
        read_metadata(meta.parent)
    listed = {(i.name, i.version) for i in Registry([REPO / "models" / "artifacts"]).list()}
    assert {(m.parent.parent.name, m.parent.name) for m in metas} <= listed


# -------------------------------------------------------------------------------------------- build context
def test_every_copy_source_exists_and_survives_the_dockerignore(dockerfile, ignore):
    checked = 0
    for stage in dockerfile.stages:
        for ins in stage.all("COPY") + stage.all("ADD"):
            assert ins.keyword == "COPY", f"line {ins.line}: use COPY (ADD fetches URLs and unpacks archives)"
            if "from" in ins.flags:
                continue
            sources, _ = dc.copy_sources(ins)
            for src in sources:
                path = REPO / src
                assert path.exists(), f"line {ins.line}: COPY source {src} does not exist"
                files = dc.context_files(src, ignore)
                assert files, f"line {ins.line}: COPY source {src} is empty in the build context"
                if path.is_dir():
                    on_disk = sorted(p.relative_to(REPO).as_posix() for p in path.rglob("*")
                                     if p.is_file() and "__pycache__" not in p.parts)
                    assert files == on_disk, f"line {ins.line}: dockerignore drops {set(on_disk) - set(files)}"
                checked += 1
    assert checked >= 8


def test_dockerignore_keeps_the_context_small(ignore):
    for heavy in (".venv/bin/python", ".cache/tools/bin/kustomize", ".git/HEAD", "tests/fixtures/alerts/x.avro",
                  "bench/results/run.json", "stream/__pycache__/cli.cpython-311.pyc", "stampflow.egg-info/PKG-INFO",
                  "deploy/k8s/base/kustomization.yaml", "demo-results.jsonl"):
        assert dc.is_ignored(heavy, ignore), heavy
    for needed in ("pyproject.toml", "README.md", "stream/cli.py", "models/artifacts/stargal/1.0.0/weights.npz",
                   "schemas/classification/v1.avsc", "deploy/docker/requirements.py"):
        assert not dc.is_ignored(needed, ignore), needed


def test_copied_files_are_used_by_a_run(dockerfile):
    # A file copied into a build stage for a RUN must be what the RUN names (catches renames on one side).
    wheel = dockerfile.stage("wheel")
    runs = " ".join(i.value for i in wheel.all("RUN"))
    for ins in wheel.all("COPY"):
        for src in dc.copy_sources(ins)[0]:
            if src.endswith(".py"):
                assert src in runs, f"{src} is copied but not run"
    for target in ("venv-cpu", "venv-gpu"):
        run = " ".join(i.value for i in dockerfile.stage(target).all("RUN"))
        want = "requirements-cpu.txt" if target == "venv-cpu" else "requirements-gpu.txt"
        assert want in run and want in runs, f"{target} installs {want}, which the wheel stage must write"
        assert "--no-deps /dist/stampflow-*.whl" in run


def test_entrypoint_and_command_exist(dockerfile):
    from stream.cli import build_parser

    scripts = PYPROJECT["project"]["scripts"]
    for target in RUNTIME_TARGETS:
        stage = dockerfile.stage(target)
        entry = stage.all("ENTRYPOINT")[-1].exec_form()
        cmd = stage.all("CMD")[-1].exec_form()
        assert entry is not None and cmd is not None, "ENTRYPOINT and CMD must use the exec form (signals)"
        assert entry[0] in scripts, f"{entry[0]} is not a [project.scripts] entry"
        module, _, func = scripts[entry[0]].partition(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func))
        build_parser().parse_args(entry[1:] + cmd)  # exits (SystemExit) on an unknown subcommand


# ---------------------------------------------------------------------------------------------- wheel stage
def test_requirements_follow_pyproject():
    deps = PYPROJECT["project"]["dependencies"]
    cpu = image_requirements.requirements("cpu", REPO / "pyproject.toml")
    gpu = image_requirements.requirements("gpu", REPO / "pyproject.toml")
    assert cpu[: len(deps)] == deps
    assert set(PYPROJECT["project"]["optional-dependencies"]["codecs"]) <= set(cpu)
    tf_cpu = [d for d in deps if image_requirements.requirement_name(d) == "tensorflow-cpu"]
    assert len(tf_cpu) == 1
    spec = tf_cpu[0][len("tensorflow-cpu"):]
    assert f"tensorflow[and-cuda]{spec}" in gpu and tf_cpu[0] not in gpu
    assert sorted(set(cpu) - set(gpu)) == tf_cpu
    assert not any(image_requirements.requirement_name(r) == "tensorflow" for r in cpu)
    with pytest.raises(ValueError):
        image_requirements.requirements("tpu", REPO / "pyproject.toml")


def test_wheel_stage_builds_from_the_context_alone(dockerfile, ignore, tmp_path):
    """Assemble exactly what the wheel stage's COPY lines put in /src (after the dockerignore), then do its
    RUN: build the wheel and write both requirement lists. Build isolation is off only because this runs
    offline; the venv's setuptools stands in for the one pip would fetch."""
    src = tmp_path / "src"
    wheel = dockerfile.stage("wheel")
    for ins in wheel.all("COPY"):
        sources, dest = dc.copy_sources(ins)
        for source in sources:
            for rel in dc.context_files(source, ignore):
                # Docker's rules: a directory's contents go into dest; a file goes into dest/ or becomes dest.
                if (REPO / source).is_dir():
                    target = src / dest / Path(rel).relative_to(Path(source))
                elif dest.endswith("/") or len(sources) > 1:
                    target = src / dest / Path(rel).name
                else:
                    target = src / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, target)
    dist = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(dist), str(src)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for target in ("cpu", "gpu"):
        out = subprocess.run([sys.executable, "deploy/docker/requirements.py", target, "pyproject.toml"], cwd=src,
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()
        assert out == image_requirements.requirements(target, REPO / "pyproject.toml")
    wheels = list(dist.glob("stampflow-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as zf:
        names = zf.namelist()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "stampflow = stream.cli:main" in entry_points
    for needed in ("stream/cli.py", "stream/config.py", "models/registry.py", "training/__init__.py",
                   "schemas/classification/v1.avsc"):
        assert needed in names, needed
    assert any(n.startswith("models/artifacts/") and n.endswith("metadata.json") for n in names)


# ---------------------------------------------------------------------------------------------- HEALTHCHECK
def _healthcheck_argv(dockerfile) -> list[str]:
    value = dockerfile.stage("cpu").all("HEALTHCHECK")[-1].value
    assert " CMD " in f" {value} ", value
    options, _, cmd = value.partition("CMD ")
    assert "--start-period=" in options and "--timeout=" in options
    argv = json.loads(cmd)
    assert isinstance(argv, list) and argv[0] == "python", argv
    return argv


def _run_healthcheck(dockerfile, env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    argv = _healthcheck_argv(dockerfile)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAMPFLOW_")}
    env.update({k: v for k, v in dockerfile.stage("cpu").env().items() if k.startswith("STAMPFLOW_")})
    env.update(env_extra)
    # `python` in the image is the venv's; here the test's interpreter plays that part.
    return subprocess.run([sys.executable] + argv[1:], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=30)


def test_healthcheck_tells_live_from_stuck_and_absent(dockerfile, tmp_path):
    from stream.metrics import Metrics

    metrics = Metrics()
    port = metrics.serve("127.0.0.1", 0)
    try:
        ok = _run_healthcheck(dockerfile, {"STAMPFLOW_METRICS__PORT": str(port)}, tmp_path)
        assert ok.returncode == 0, ok.stderr
        metrics.health.last_poll_monotonic = time.monotonic() - 10 * metrics.health.live_timeout_s
        stuck = _run_healthcheck(dockerfile, {"STAMPFLOW_METRICS__PORT": str(port)}, tmp_path)
        assert stuck.returncode != 0 and "503" in stuck.stderr, stuck.stderr
        # the port comes from the worker's own settings, the YAML file included
        metrics.health.beat()
        config = tmp_path / "stampflow.yaml"
        config.write_text(f"metrics:\n  port: {port}\n")
        from_file = _run_healthcheck(dockerfile, {"STAMPFLOW_CONFIG_FILE": str(config)}, tmp_path)
        assert from_file.returncode == 0, from_file.stderr
    finally:
        metrics.close()
    gone = _run_healthcheck(dockerfile, {"STAMPFLOW_METRICS__PORT": str(port)}, tmp_path)
    assert gone.returncode != 0
