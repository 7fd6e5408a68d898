"""Load the deployed functions' handler modules by path (each directory is its own Lambda asset)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"


@cache
def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"petrel_function_{name}", FUNCTIONS / name / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def api_handler() -> Any:
    return load("api").lambda_handler


def authorizer_handler() -> Any:
    return load("authorizer").lambda_handler


def worker_handler() -> Any:
    return load("send_worker").lambda_handler


def sweeper_handler() -> Any:
    return load("sweeper").lambda_handler
