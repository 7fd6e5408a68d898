# Petrel. `make run` brings the platform up locally; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ENV ?= dev
CDK_CLI ?= aws-cdk@2.1148.1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION ?= 20
export CDK_DISABLE_VERSION_CHECK ?= 1
export CDK_DISABLE_CLI_TELEMETRY ?= true

.PHONY: venv run test test-unit test-integration test-infra test-e2e lint format synth deploy diff bench openapi mail clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# Debian's Postfix + Dovecot, the MailU stand-in (needs root and apt; a no-op when present).
mail:
	bash local/install_mail.sh

run: venv mail
	$(PY) -m local

test: venv mail
	$(PY) -m pytest -p no:cacheprovider

test-unit: venv
	$(PY) -m pytest -p no:cacheprovider tests/unit

test-integration: venv mail
	$(PY) -m pytest -p no:cacheprovider tests/integration

test-infra: venv
	$(PY) -m pytest -p no:cacheprovider tests/infra

test-e2e: venv mail
	$(PY) -m pytest -p no:cacheprovider tests/e2e

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy layers/core/python/petrel functions/api/handler.py functions/authorizer/handler.py functions/send_worker/handler.py functions/sweeper/handler.py

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

openapi: venv
	$(PY) -m petrel.api.openapi > openapi.json

synth: venv
	CDK_OUTDIR=cdk.out $(PY) app.py

diff: venv
	npx --yes $(CDK_CLI) diff --no-notices -c env=$(ENV) --app "$(PY) app.py"

deploy: venv
	npx --yes $(CDK_CLI) deploy --no-notices -c env=$(ENV) --app "$(PY) app.py"

bench: venv mail
	$(PY) -m bench.relay

clean:
	rm -rf cdk.out .build .petrel
