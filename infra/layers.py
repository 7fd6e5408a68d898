"""The two Lambda layers (third-party dependencies, and the `petrel` package), built without Docker.

Both are CDK assets whose bundling runs locally (`ILocalBundling`):

* deps: `pip install` of `layers/deps/requirements.txt` for CPython 3.13 on manylinux2014_aarch64
  (binary wheels only; packages published only as source, such as dkimpy, are built into a pure
  wheel first and offered with `--find-links`);
* petrel: a copy of `layers/core/python/petrel`, without `__pycache__` and without the `cli`
  subpackage (it is the operators' command, not runtime code).

Both are then byte-compiled by a Python 3.13 interpreter with unchecked-hash `.pyc` files: Lambda's
`/opt` is read-only, so a layer without them recompiles every module on every cold start.

A build is cached under `.build/layers/<sha256 of its inputs>/`, so a synthesis whose inputs did
not change copies the previous result instead of running pip again. The same digest is the CDK
asset hash. Tests skip bundling altogether with the context `aws:cdk:bundling-stacks: []`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from infra import PETREL_LAYER_SOURCE, REPO_ROOT

# Bump to invalidate every cached build when the build steps below change.
BUILDER_VERSION = "2"

LAMBDA_PYTHON = (3, 13)
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_13
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
PIP_PLATFORM = "manylinux2014_aarch64"

DEPS_SOURCE = REPO_ROOT / "layers" / "deps"
DEPS_REQUIREMENTS = DEPS_SOURCE / "requirements.txt"
# Published on PyPI as source only: built into a (pure Python) wheel before the install.
SOURCE_ONLY_PACKAGES = frozenset({"dkimpy"})

PETREL_EXCLUDED_PARTS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache"})
PETREL_EXCLUDED_SUBPACKAGES = frozenset({"cli"})
PETREL_EXCLUDED_SUFFIXES = (".pyc", ".pyo")

BUILD_ROOT = REPO_ROOT / ".build"
CACHE_ROOT = BUILD_ROOT / "layers"
_MANIFEST = "build.json"

# Never used: the local build below either succeeds or raises. CDK requires an image anyway.
_FALLBACK_IMAGE = "public.ecr.aws/sam/build-python3.13"


class LayerBuildError(RuntimeError):
    """A layer could not be built."""


def _log(message: str) -> None:
    print(f"[petrel layers] {message}", file=sys.stderr, flush=True)


# --- finding a Python 3.13 for byte-compilation -------------------------------------------------


def _candidate_interpreters() -> Iterator[str]:
    name = "python{}.{}".format(*LAMBDA_PYTHON)
    if sys.version_info[:2] == LAMBDA_PYTHON:
        yield sys.executable
    found = shutil.which(name)
    if found:
        yield found  # may be a pyenv shim that refuses to run; it is checked below
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    if shutil.which("pyenv"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            pyenv = subprocess.run(["pyenv", "root"], check=False, capture_output=True, text=True, timeout=10)
            roots.append(pyenv.stdout.strip())
    for root in dict.fromkeys(r for r in roots if r):
        versions = Path(root) / "versions"
        for version in sorted(versions.glob("{}.{}*".format(*LAMBDA_PYTHON)), reverse=True):
            yield str(version / "bin" / name)


def _reports_lambda_version(interpreter: str) -> bool:
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    try:
        result = subprocess.run([interpreter, "-c", probe], check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and result.stdout.strip() == "{}.{}".format(*LAMBDA_PYTHON)


@functools.cache
def find_lambda_python() -> str | None:
    """A Python interpreter of the Lambda runtime's version, or None when there is none."""
    for candidate in dict.fromkeys(_candidate_interpreters()):
        if _reports_lambda_version(candidate):
            return candidate
    return None


def compile_bytecode(python_dir: Path) -> bool:
    """Write unchecked-hash `.pyc` files next to the sources; False when no 3.13 is available."""
    interpreter = find_lambda_python()
    if interpreter is None:
        _log(
            "WARNING: no Python {}.{} interpreter found; the layer ships without .pyc files "
            "(slower cold starts)".format(*LAMBDA_PYTHON)
        )
        return False
    command = [interpreter, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
    _run([*command, str(python_dir)], what=f"byte-compiling {python_dir.name}")
    return True


def _run(command: list[str], *, what: str) -> None:
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "PYTHONHOME"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-4000:]
        raise LayerBuildError(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{output}")


# --- the two builds ---------------------------------------------------------------------------


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_lines(requirements: Path) -> list[str]:
    lines = []
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def build_deps_layer(out_dir: Path, requirements: Path = DEPS_REQUIREMENTS) -> None:
    """Install the pinned third-party packages for Lambda (cp313, aarch64) into `out_dir/python`."""
    python_dir = out_dir / "python"
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix="petrel-wheels-") as wheels:
        source_only = [
            line
            for line in _requirement_lines(requirements)
            if _canonical(re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0]) in SOURCE_ONLY_PACKAGES
        ]
        if source_only:
            _run([*pip, "wheel", "--no-deps", "--wheel-dir", wheels, *source_only], what="building wheels")
        install = [
            *pip,
            "install",
            "--quiet",
            "--no-compile",
            "--platform",
            PIP_PLATFORM,
            "--implementation",
            "cp",
            "--python-version",
            "{}.{}".format(*LAMBDA_PYTHON),
            "--only-binary=:all:",
            "--find-links",
            wheels,
            "--target",
            str(python_dir),
            "--requirement",
            str(requirements),
        ]
        _run(install, what="pip install of the deps layer")
    # Console scripts and man pages: not importable, not needed at run time.
    for unused in ("bin", "share"):
        shutil.rmtree(python_dir / unused, ignore_errors=True)
    compile_bytecode(python_dir)


def _petrel_files(source: Path = PETREL_LAYER_SOURCE) -> list[Path]:
    """The files of the `petrel` package that the layer ships, relative to `source`."""
    package = source / "petrel"
    if not package.is_dir():
        raise LayerBuildError(f"the petrel package is missing: {package.relative_to(REPO_ROOT)}")
    files = []
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(source)
        parts = relative.parts
        if not path.is_file() or PETREL_EXCLUDED_PARTS.intersection(parts):
            continue
        if len(parts) > 2 and parts[1] in PETREL_EXCLUDED_SUBPACKAGES:
            continue
        if path.suffix in PETREL_EXCLUDED_SUFFIXES:
            continue
        files.append(relative)
    return files


def build_petrel_layer(out_dir: Path, source: Path = PETREL_LAYER_SOURCE) -> None:
    """Copy the `petrel` package (without `cli`) into `out_dir/python` and byte-compile it."""
    python_dir = out_dir / "python"
    for relative in _petrel_files(source):
        target = python_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, target)
    compile_bytecode(python_dir)


# --- digests and the cache --------------------------------------------------------------------


def _digest(name: str, parts: list[tuple[str, bytes]]) -> str:
    sha = hashlib.sha256()
    header = [name, BUILDER_VERSION, PIP_PLATFORM, "{}.{}".format(*LAMBDA_PYTHON)]
    header.append("pyc" if find_lambda_python() else "no-pyc")
    for label, data in [("header", "\0".join(header).encode()), *parts]:
        sha.update(label.encode() + b"\0" + hashlib.sha256(data).digest())
    return sha.hexdigest()


def deps_digest(requirements: Path = DEPS_REQUIREMENTS) -> str:
    return _digest(
        "deps",
        [
            ("requirements", requirements.read_bytes()),
            ("source-only", ",".join(sorted(SOURCE_ONLY_PACKAGES)).encode()),
        ],
    )


def petrel_digest(source: Path = PETREL_LAYER_SOURCE) -> str:
    return _digest("petrel", [(path.as_posix(), (source / path).read_bytes()) for path in _petrel_files(source)])


def _ensure_build_root() -> None:
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    ignore = BUILD_ROOT / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Build cache (Lambda layers); never committed.\n*\n")


def cached_build(name: str, digest: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """The directory holding the build for `digest`, building it first if needed; and whether it was cached."""
    _ensure_build_root()
    target = CACHE_ROOT / digest
    if (target / _MANIFEST).is_file():
        return target, True
    staging = CACHE_ROOT / f".tmp-{digest[:16]}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        build(staging)
        manifest = {"layer": name, "builder": BUILDER_VERSION, "pyc": find_lambda_python() is not None}
        (staging / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if not (target / _MANIFEST).is_file():  # another synthesis may have finished the same build
            shutil.rmtree(target, ignore_errors=True)  # an interrupted build, if any
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, False


def _link_or_copy_tree(source: Path, target: Path) -> None:
    """Hard-link the cached files into the asset directory (cheap), copying where links fail."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy, dirs_exist_ok=True)


@jsii.implements(ILocalBundling)
class _LocalLayerBuild:
    """CDK calls `try_bundle` instead of running Docker; the layer is built (or reused) here."""

    def __init__(self, name: str, digest: str, build: Callable[[Path], None]) -> None:
        self._name = name
        self._digest = digest
        self._build = build

    def try_bundle(self, output_dir: str, *, image: DockerImage, **options: Any) -> bool:
        started = time.monotonic()
        built, was_cached = cached_build(self._name, self._digest, self._build)
        _link_or_copy_tree(built / "python", Path(output_dir) / "python")
        origin = "from cache" if was_cached else "built"
        _log(f"{self._name} layer {origin} in {time.monotonic() - started:.1f} s ({self._digest[:12]})")
        return True


def _layer_code(name: str, source: Path, digest: str, build: Callable[[Path], None]) -> lambda_.Code:
    return lambda_.Code.from_asset(
        str(source),
        asset_hash=digest,
        asset_hash_type=AssetHashType.CUSTOM,
        bundling=BundlingOptions(
            image=DockerImage.from_registry(_FALLBACK_IMAGE),
            local=_LocalLayerBuild(name, digest, build),
        ),
    )


def deps_layer_code() -> lambda_.Code:
    return _layer_code("deps", DEPS_SOURCE, deps_digest(), build_deps_layer)


def petrel_layer_code() -> lambda_.Code:
    return _layer_code("petrel", PETREL_LAYER_SOURCE, petrel_digest(), build_petrel_layer)
