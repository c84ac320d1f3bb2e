"""The Dockerfile and .dockerignore, read as text (no Docker engine needed).

A small parser turns the Dockerfile into (instruction, arguments) pairs per stage: line
continuations joined, comments and parser directives dropped.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|cc|clang|make|build-essential|libpq-dev|python3?-dev|apt-get|apk|git)\b"
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        result.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    return result


def global_args(parsed: list[tuple[str, str]]) -> dict[str, str]:
    """ARG defaults declared before the first FROM."""
    defaults: dict[str, str] = {}
    for keyword, rest in parsed:
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults[name] = value
    return defaults


def stages() -> list[Stage]:
    parsed = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    defaults = global_args(parsed)
    result: list[Stage] = []
    for keyword, rest in parsed:
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(base, name))
        elif result:
            result[-1].instructions.append((keyword, rest))
    return result


def builder() -> Stage:
    (stage,) = [s for s in stages() if s.name == "builder"]
    return stage


def final() -> Stage:
    return stages()[-1]


def env(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for rest in stage.args("ENV"):
        for word in shlex.split(rest):
            name, _, value = word.partition("=")
            values[name] = value
    return values


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def in_build_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for pattern in dockerignore_patterns():
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").rstrip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            included = negated
    return included


def copy_sources(stage: Stage) -> list[str]:
    """Build-context sources of the stage's COPY instructions (not --from copies)."""
    sources: list[str] = []
    for rest in stage.args("COPY"):
        words = [w for w in rest.split() if not w.startswith("--")]
        if "--from=" not in rest:
            sources.extend(words[:-1])
    return sources


def test_build_command_is_documented_at_the_top() -> None:
    """The first comment lines say how to build the image."""
    head = DOCKERFILE.read_text(encoding="utf-8").splitlines()[:5]
    assert any("docker build -t pg-cache-invalidator ." in line for line in head)


def test_both_stages_use_python_311_slim() -> None:
    """Builder and final stage start from python:3.11-slim."""
    assert [(s.name, s.base) for s in stages()] == [
        ("builder", "python:3.11-slim"),
        (None, "python:3.11-slim"),
    ]


def test_builder_builds_the_project_wheel() -> None:
    """The builder runs `pip wheel --no-deps` of the project into /wheels."""
    runs = builder().args("RUN")
    assert any(re.search(r"pip wheel --no-deps --wheel-dir /wheels \.$", run) for run in runs)


def test_builder_builds_the_dependency_wheels() -> None:
    """The builder turns the dependencies of pyproject.toml into wheels in /wheels."""
    runs = " ".join(builder().args("RUN"))
    assert "['project']['dependencies']" in runs
    assert "pip wheel --wheel-dir /wheels --requirement /tmp/requirements.txt" in runs


def test_final_stage_installs_only_the_builders_wheels() -> None:
    """The final stage pip-installs from the builder's /wheels, with no index to fall back on."""
    (install,) = [run for run in final().args("RUN") if "pip install" in run]
    assert "--mount=type=bind,from=builder,source=/wheels,target=/wheels" in install
    assert "--no-index" in install and "--find-links=/wheels" in install
    assert install.split("pip install", 1)[1].split("&&")[0].split()[-1] == "pg-cache-invalidator"


def test_final_stage_copies_nothing_from_the_build_context() -> None:
    """Only wheels reach the final image: no source tree, no tests."""
    assert final().args("COPY") == [] and final().args("ADD") == []


def test_builder_has_a_c_compiler_for_the_hot_path() -> None:
    """The builder installs gcc: the project's wheel compiles invalidator/hotpath/_hotpath.c."""
    runs = " ".join(builder().args("RUN"))
    assert "apt-get install" in runs and "gcc" in runs


def test_final_stage_installs_no_build_tools() -> None:
    """No compiler, build-essential, headers or package manager runs in the final stage."""
    for run in final().args("RUN"):
        assert not BUILD_TOOLS.search(run), run


def test_final_stage_keeps_no_pip_cache() -> None:
    """pip runs without a cache in the final stage."""
    (install,) = [run for run in final().args("RUN") if "pip install" in run]
    assert "--no-cache-dir" in install
    assert env(final())["PIP_NO_CACHE_DIR"] == "1"


def test_final_user_is_numeric_and_not_root() -> None:
    """USER is the numeric uid:gid the stage creates, never 0."""
    (user,) = final().args("USER")
    assert re.fullmatch(r"\d+:\d+", user)
    uid, gid = user.split(":")
    assert uid != "0" and gid != "0"
    (create,) = [run for run in final().args("RUN") if "useradd" in run]
    assert f"--uid {uid}" in create and f"--gid {gid}" in create


def test_user_is_set_after_the_install() -> None:
    """Packages install as root; everything after USER (the daemon) runs unprivileged."""
    keywords = [keyword for keyword, _ in final().instructions]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


def test_entrypoint_runs_the_daemon() -> None:
    """ENTRYPOINT ["invalidator"] and CMD ["run"], both in exec form."""
    (entrypoint,) = final().args("ENTRYPOINT")
    (cmd,) = final().args("CMD")
    assert json.loads(entrypoint) == ["invalidator"]
    assert json.loads(cmd) == ["run"]


def test_exposes_the_http_port() -> None:
    """EXPOSE 9464, the default http.listen port."""
    assert final().args("EXPOSE") == ["9464"]


def test_env_points_at_the_config_and_unbuffers_output() -> None:
    """INVALIDATOR_CONFIG is the mounted config path; Python output is unbuffered."""
    values = env(final())
    assert values["INVALIDATOR_CONFIG"] == "/etc/invalidator/config.yaml"
    assert values["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "tests/fixtures/toast.jsonl",
        "tests/unit/test_dockerfile.py",
        "invalidator/commands/__pycache__/cli.cpython-311.pyc",
        "invalidator/hotpath/_hotpath.cpython-311-x86_64-linux-gnu.so",
        ".pytest_cache/README.md",
        ".mypy_cache/3.11/cache.db",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/x",
        "pg_cache_invalidator.egg-info/PKG-INFO",
        "k8s/secret.example.yaml",
        ".env",
    ],
)
def test_dockerignore_excludes(path: str) -> None:
    """VCS data, virtualenvs, tests, caches and stray files stay out of the build context."""
    assert not in_build_context(path)


def test_build_context_holds_what_the_builder_copies() -> None:
    """Every COPY source of the builder, and the package's modules, are in the context."""
    sources = copy_sources(builder())
    assert sources == ["pyproject.toml", "setup.py", "README.md", "invalidator"]
    for source in [
        *sources,
        "invalidator/commands/cli.py",
        "invalidator/py.typed",
        "invalidator/hotpath/_hotpath.c",
        "invalidator/hotpath/placement.c",
        "invalidator/hotpath/placement.h",
    ]:
        assert in_build_context(source), source
