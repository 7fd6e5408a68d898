#!/usr/bin/env python3
"""The Petrel CDK app.

    cdk synth -c env=dev      one environment of cdk.json's `environments`
    python app.py             every environment

cdk-nag's AwsSolutions checks run on every synthesis; an unacknowledged finding fails it.
Synthesis makes no AWS calls: stacks are environment-agnostic unless cdk.json gives an
account and region.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
# Runnable as `python app.py` from anywhere: the repository root must be importable.
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra.config import CONTEXT_KEY, select_environments  # noqa: E402
from infra.stacks.petrel_stack import PetrelStack  # noqa: E402


def stack_id(env_name: str) -> str:
    return f"Petrel-{env_name}"


def cdk_json_context() -> dict[str, Any]:
    """The `context` of cdk.json. The cdk CLI passes it itself; a plain `python app.py` does not."""
    context = json.loads((ROOT / "cdk.json").read_text()).get("context", {})
    assert isinstance(context, dict)
    return context


def new_app(context: dict[str, Any] | None = None, outdir: str | None = None) -> cdk.App:
    """An App with cdk.json's context as defaults (the CLI's and `context`'s values win).

    Outside the cdk CLI (no CDK_OUTDIR) and without `outdir`, the cloud assembly goes to
    `cdk.out` next to this file.
    """
    merged = {**cdk_json_context(), **(context or {})}
    if outdir is None and "CDK_OUTDIR" not in os.environ:
        outdir = str(ROOT / "cdk.out")
    return cdk.App(context=merged, outdir=outdir)


def build_app(app: cdk.App | None = None) -> cdk.App:
    """Add one PetrelStack per selected environment (and the cdk-nag checks) to `app`."""
    app = app or new_app()
    env_name = app.node.try_get_context("env")
    for config in select_environments(app.node.try_get_context(CONTEXT_KEY), env_name):
        environment = cdk.Environment(account=config.account, region=config.region) if config.account else None
        stack = PetrelStack(
            app,
            stack_id(config.name),
            config=config,
            stack_name=config.name_prefix,
            env=environment,
            description=f"Petrel email relay ({config.name})",
            termination_protection=not config.destroy_on_delete,
        )
        cdk.Tags.of(stack).add("project", "petrel")
        cdk.Tags.of(stack).add("environment", config.name)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def main() -> None:
    build_app().synth()


if __name__ == "__main__":
    main()
