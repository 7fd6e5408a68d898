"""Shared fixtures: the `dev` stack is synthesized once per test session, without asset bundling."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk.assertions import Template  # noqa: E402

import app as petrel_app  # noqa: E402
from infra.config import CONTEXT_KEY, EnvironmentConfig, parse_environments  # noqa: E402

ENV_NAME = "dev"
# Skips asset bundling (no layer builds): the templates are identical apart from asset hashes.
SKIP_BUNDLING: dict[str, Any] = {"aws:cdk:bundling-stacks": []}


def synthesize(
    outdir: Path,
    env_name: str | None,
    environments: dict[str, Any] | None = None,
    extend: Callable[[Any], None] | None = None,
) -> Any:
    """Synthesize the app (one environment, or all when `env_name` is None); cdk-nag runs too.

    `environments` replaces cdk.json's environments; `extend(app)` may add to the app before synthesis.
    """
    context: dict[str, Any] = dict(SKIP_BUNDLING)
    if env_name is not None:
        context["env"] = env_name
    if environments is not None:
        context[CONTEXT_KEY] = environments
    cdk_app = petrel_app.build_app(petrel_app.new_app(context, outdir=str(outdir)))
    if extend is not None:
        extend(cdk_app)
    return cdk_app.synth()


@pytest.fixture(scope="session")
def synthesizer() -> Any:
    """`synthesizer(outdir, env_name)`; for tests that need a synthesis of their own."""
    return synthesize


@pytest.fixture(scope="session")
def all_environments(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(outdir, cloud assembly) of every environment of cdk.json, synthesized once."""
    outdir = tmp_path_factory.mktemp("cdk-all")
    # Raises (jsii RuntimeError "Validation failed") on any unacknowledged cdk-nag finding.
    return outdir, synthesize(outdir, None)


@pytest.fixture(scope="session")
def environments() -> dict[str, EnvironmentConfig]:
    return parse_environments(petrel_app.cdk_json_context()[CONTEXT_KEY])


@pytest.fixture(scope="session")
def config(environments: dict[str, EnvironmentConfig]) -> EnvironmentConfig:
    return environments[ENV_NAME]


@pytest.fixture(scope="session")
def template_json(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    assembly = synthesize(tmp_path_factory.mktemp("cdk-dev"), ENV_NAME)
    stack = assembly.get_stack_artifact(petrel_app.stack_id(ENV_NAME))
    template: dict[str, Any] = stack.template
    return template


@pytest.fixture(scope="session")
def template(template_json: dict[str, Any]) -> Template:
    return Template.from_json(template_json)


@pytest.fixture(scope="session")
def resources_of(template_json: dict[str, Any]) -> Any:
    """`resources_of("AWS::SQS::Queue")` -> {logical id: resource} of the dev template."""

    def find(resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in template_json["Resources"].items()
            if resource["Type"] == resource_type
        }

    return find
