"""The installed `petrel` command, run as an operator runs it: from another directory, so only what the
package installs is importable (the tests themselves import from the repository root)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PETREL = Path(sys.executable).with_name("petrel")


@pytest.mark.parametrize(
    "command", [["--help"], ["dns", "publish", "--help"], ["domain", "add", "--help"], ["tenant", "--help"]]
)
def test_the_installed_command_imports_everything_it_needs_from_any_directory(
    tmp_path: Path, command: list[str]
) -> None:
    assert PETREL.exists(), f"{PETREL} is not installed (pip install -e .)"
    done = subprocess.run(
        [str(PETREL), *command], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "usage: petrel" in done.stdout


def test_the_installed_command_says_the_local_stack_is_down_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(PETREL), "--workdir", str(tmp_path), "dns", "publish", "acme.test"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
