"""Offline checks of deploy/docker: the Dockerfile read as BuildKit reads it (stages, instructions, ARG
substitution), hadolint with the repository's config, and which files the .dockerignore lets into the build
context."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from deploy_common import DEPLOY, REPO, venv_tool

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"


@dataclass
class Instruction:
    keyword: str          # upper case: FROM, RUN, COPY, ...
    value: str            # the rest of the instruction, continuation lines joined, flags included
    line: int             # 1-based line of the keyword

    @property
    def flags(self) -> dict[str, str]:
        out = {}
        for tok in self.value.split():
            if not tok.startswith("--"):
                break
            k, _, v = tok[2:].partition("=")
            out[k] = v
        return out

    @property
    def body(self) -> str:
        """The value without leading --flags."""
        toks = self.value.split(" ")
        while toks and (toks[0].startswith("--") or toks[0] == ""):
            toks.pop(0)
        return " ".join(toks).strip()

    def exec_form(self) -> list[str] | None:
        body = self.body
        if body.startswith("["):
            try:
                parsed = json.loads(body)
            except json.JSONDecodeError:
                return None
            if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
                return parsed
        return None


@dataclass
class Stage:
    name: str | None
    base: str                       # FROM argument with global ARGs substituted
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for tok in shlex.split(ins.value, posix=True):
                key, sep, value = tok.partition("=")
                if not sep:
                    raise ValueError(f"line {ins.line}: ENV without '=' ({tok!r}); use the KEY=VALUE form")
                out[key] = value
        return out


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage named {name!r} (stages: {[s.name for s in self.stages]})")

    def ancestry(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        chain = [self.stage(name)]
        names = {s.name for s in self.stages}
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Dockerfile lines with backslash continuations joined and comment lines (also inside continuations)
    dropped, as BuildKit reads them."""
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        yield start, " ".join(b for b in buf if b)
        buf = []
    if buf:
        yield start, " ".join(buf)


_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def substitute(value: str, args: dict[str, str]) -> str:
    return _VAR.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, text in logical_lines(path.read_text()):
        keyword, _, value = text.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "FROM":
            parts = value.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            base = substitute(parts[0], global_args)
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=base, line=line))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"line {line}: {keyword} before the first FROM")
            key, _, default = value.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value, line))
    return Dockerfile(global_args, stages)


def hadolint(path: Path = DOCKERFILE) -> list[dict]:
    """hadolint's findings at every level (error, warning, info, style) as dicts; [] means clean. The repo's
    own config is passed explicitly so a developer's ~/.config/hadolint.yaml cannot silence a rule."""
    config = DEPLOY / "tools" / "hadolint.yaml"
    proc = subprocess.run([venv_tool("hadolint"), "--config", str(config), "--format", "json", "--no-color",
                           str(path)], capture_output=True, text=True, timeout=60)
    if proc.returncode not in (0, 1) or not proc.stdout.strip().startswith("["):
        raise RuntimeError(f"hadolint failed (rc {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return json.loads(proc.stdout)


# ------------------------------------------------------------------------------------------- .dockerignore
@dataclass
class IgnorePattern:
    regex: re.Pattern
    exclusion: bool       # a `!` line: re-include
    text: str


def _pattern_regex(pattern: str) -> re.Pattern:
    # Go filepath.Match semantics plus `**`, as in moby/patternmatcher.
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.index("]", i)
            out.append("[" + pattern[i + 1:j].replace("!", "^", 1) + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$")


def read_dockerignore(path: Path = DOCKERIGNORE) -> list[IgnorePattern]:
    patterns = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        line = os.path.normpath(line).lstrip("/")
        patterns.append(IgnorePattern(_pattern_regex(line), exclusion, raw.strip()))
    return patterns


def is_ignored(relpath: str, patterns: list[IgnorePattern]) -> bool:
    """Whether the build context leaves `relpath` (relative to the context root) out. A pattern that matches a
    parent directory matches everything below it; the last matching pattern decides."""
    parts = relpath.strip("/").split("/")
    candidates = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    ignored = False
    for p in patterns:
        if any(p.regex.match(c) for c in candidates):
            ignored = not p.exclusion
    return ignored


def copy_sources(ins: Instruction) -> tuple[list[str], str]:
    """(sources, destination) of a COPY/ADD."""
    form = ins.exec_form()
    toks = form if form is not None else shlex.split(ins.body)
    return toks[:-1], toks[-1]


def context_files(source: str, patterns: list[IgnorePattern], root: Path = REPO) -> list[str]:
    """Files under a COPY source that reach the build context (relative paths)."""
    src = root / source
    if src.is_file():
        rel = src.relative_to(root).as_posix()
        return [] if is_ignored(rel, patterns) else [rel]
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in filenames:
            rel = (Path(dirpath) / f).relative_to(root).as_posix()
            if not is_ignored(rel, patterns):
                out.append(rel)
    return sorted(out)
