"""The Docker-less layer build: the petrel layer is copied and byte-compiled locally."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra import PETREL_LAYER_SOURCE, REPO_ROOT
from infra.layers import DEPS_REQUIREMENTS, build_petrel_layer, find_lambda_python, petrel_digest

pytestmark = pytest.mark.infra


def test_petrel_layer_build(tmp_path: Path) -> None:
    build_petrel_layer(tmp_path)
    package = tmp_path / "python" / "petrel"
    assert (package / "__init__.py").is_file()
    assert (package / "resources.py").is_file()
    assert not (package / "cli").exists()
    assert not list(package.rglob("cli/*.py"))
    compiled = list(package.rglob("*.cpython-313.pyc"))
    if find_lambda_python() is not None:
        assert (package / "__pycache__" / "resources.cpython-313.pyc").is_file()
        sources = [p for p in package.rglob("*.py")]
        assert len(compiled) == len(sources)
        assert not any(p.name.endswith(".cpython-311.pyc") for p in package.rglob("*.pyc"))
    else:
        assert compiled == []


def test_petrel_digest_follows_the_sources() -> None:
    assert petrel_digest() == petrel_digest()
    assert re.fullmatch(r"[0-9a-f]{64}", petrel_digest())
    assert (PETREL_LAYER_SOURCE / "petrel" / "resources.py").is_file()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[re.sub(r"\[.*\]", "", name).strip().lower()] = version.strip()
    return pins


def test_deps_requirements_are_pinned_like_the_repository_and_leave_boto3_to_the_runtime() -> None:
    deps = _pins(DEPS_REQUIREMENTS)
    repository = _pins(REPO_ROOT / "requirements.txt")
    assert {"aws-lambda-powertools", "pydantic", "dnspython", "dkimpy", "cryptography"} <= set(deps)
    assert "boto3" not in deps and "botocore" not in deps
    for name, version in deps.items():
        assert version, f"{name} is not pinned"
        assert repository.get(name) == version, f"{name}=={version} differs from requirements.txt"
