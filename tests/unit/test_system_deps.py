"""scripts/install-system-deps.sh installs what its purpose needs and says so: the demo's
packages leave out dnsmasq, and progress is printed while apt-get works.

The machine's own apt-get and dpkg-query are replaced by stand-ins on PATH that record
what they were asked (a machine where nothing is installed yet): nothing is installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-system-deps.sh"


def _packages(purpose: str) -> list[str]:
    result = subprocess.run(
        ["bash", str(SCRIPT), "--for", purpose, "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_the_demo_installs_no_dnsmasq_and_the_tests_do() -> None:
    """dnsmasq is for the discovery tests only."""
    assert "dnsmasq-base" not in _packages("demo")
    assert "dnsmasq-base" in _packages("test")
    assert set(_packages("demo")) < set(_packages("test"))


def _fake_machine(tmp_path: Path) -> dict[str, str]:
    """PATH with an apt-get that logs its arguments and a dpkg-query that knows nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "apt-get").write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path}/apt.log\n'
        'if [ "$1" = install ]; then for p in "$@"; do case "$p" in -*|install) ;;'
        ' *) echo "Unpacking $p"; echo "Setting up $p (1.0) ...";; esac; done; fi\n'
    )
    for tool in ("dpkg-query", "apt-get"):
        (bin_dir / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_on_a_machine_without_dnsmasq_the_demo_installs_none_and_shows_progress(
    tmp_path: Path,
) -> None:
    """`--for demo` asks apt-get for the demo's packages only, one progress line each."""
    result = subprocess.run(
        ["bash", str(SCRIPT), "--for", "demo"],
        env=_fake_machine(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    installs = [
        line.split()
        for line in (tmp_path / "apt.log").read_text().splitlines()
        if line.startswith("install")
    ]
    assert len(installs) == 1
    asked = [word for word in installs[0] if not word.startswith("-") and word != "install"]
    assert "dnsmasq-base" not in asked
    assert set(_packages("demo")) <= set(asked)
    lines = result.stderr.splitlines()
    assert lines[0] == f"system-deps (demo): installing Debian packages: {' '.join(asked)}"
    for package in asked:
        assert f"system-deps (demo):   Setting up {package} (1.0) ..." in lines
    assert lines[-1].startswith(f"system-deps (demo): installed {len(asked)} packages in ")
