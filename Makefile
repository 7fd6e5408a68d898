# Petrel. `make run` brings the platform up locally; `make test` runs every test.
# The runtime's Python (Lambda runs 3.13): python3.13 on PATH, else pyenv's 3.13, else python3 with a warning.
# A candidate counts only if it runs and says 3.13 (a pyenv shim with no version selected exits non-zero).
is_py = $(shell "$(1)" -c 'import sys; print(sys.executable if sys.version_info[:2] == ($(2)) else "")' 2>/dev/null)
find_py = $(firstword $(foreach p,python$(1) $(shell pyenv prefix $(1) 2>/dev/null | head -n1)/bin/python$(1),$(call is_py,$(p),$(subst .,$(comma) ,$(1)))))
comma := ,
PYTHON ?= $(or $(call find_py,3.13),python3)
VENV ?= .venv
# LocalStack (SQS, S3, Secrets Manager, Scheduler for the tests) in a venv of its own: it needs Python >= 3.12.
LOCALSTACK_PYTHON ?= $(or $(call find_py,3.13),$(call find_py,3.12))
LOCALSTACK_VENV ?= .localstack/venv
PY := $(VENV)/bin/python
ENV ?= dev
CDK_CLI ?= aws-cdk@2.1148.1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION ?= 20
export CDK_DISABLE_VERSION_CHECK ?= 1
export CDK_DISABLE_CLI_TELEMETRY ?= true

.PHONY: venv localstack run test test-unit test-integration test-infra test-e2e lint format synth deploy diff bench openapi mail dns clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.version_info[:2] == (3, 13) or print(f"warning: no Python 3.13 found (Lambda runs 3.13); building $(VENV) with {sys.version.split()[0]}", file=sys.stderr)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

localstack: $(LOCALSTACK_VENV)/.installed

$(LOCALSTACK_VENV)/.installed: requirements-localstack.txt
	@test -n "$(LOCALSTACK_PYTHON)" || { echo "LocalStack needs Python 3.12 or 3.13 (python3.13 on PATH, or pyenv's); set LOCALSTACK_PYTHON" >&2; exit 1; }
	rm -rf $(LOCALSTACK_VENV)
	$(LOCALSTACK_PYTHON) -m venv $(LOCALSTACK_VENV)
	$(LOCALSTACK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCALSTACK_VENV)/bin/python -m pip install --quiet -r requirements-localstack.txt
	touch $@

# Debian's Postfix + Dovecot, the MailU stand-in (needs root and apt; a no-op when present).
mail:
	bash local/install_mail.sh

# Debian's Knot DNS, the authoritative server the tests and `make run` publish records into (root and apt;
# a no-op when knotd is present). Its system service is left stopped: local/knot.py runs its own knotd.
dns:
	bash local/install_dns.sh

# `make run PORT=9000 LOG_LEVEL=DEBUG`: the API's port on 127.0.0.1 and the functions' log level
# (DEBUG, INFO: a line per API request and delivery attempt, WARNING, ERROR). Metrics: .petrel/metrics.jsonl.
# LOG_FORMAT=text (one short line per record) or json (Powertools' JSON, as on Lambda).
# BACKEND=moto (moto's server for all of AWS) or localstack (LocalStack for SQS, S3, Secrets Manager and
# Scheduler, built by `make localstack`; DynamoDB stays on moto's server).
PORT ?= 8080
LOG_LEVEL ?= INFO
LOG_FORMAT ?= text
BACKEND ?= moto
run: venv mail dns $(if $(filter localstack,$(BACKEND)),localstack)
	$(PY) -m local --port $(PORT) --log-level $(LOG_LEVEL) --log-format $(LOG_FORMAT) --backend $(BACKEND)

test: venv mail localstack dns
	$(PY) -m pytest -p no:cacheprovider

test-unit: venv
	$(PY) -m pytest -p no:cacheprovider tests/unit

test-integration: venv mail localstack dns
	$(PY) -m pytest -p no:cacheprovider tests/integration

test-infra: venv
	$(PY) -m pytest -p no:cacheprovider tests/infra

test-e2e: venv mail localstack dns
	$(PY) -m pytest -p no:cacheprovider tests/e2e

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy  # mypy --strict on pyproject's [tool.mypy] files

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

# Every part runs and prints its figures; `make bench` fails at the end if any part missed a target.
BENCH_PARTS = relay coldstart ingest dkim buckets worker cost
bench: venv mail dns
	@missed=""; for part in $(BENCH_PARTS); do echo "$(PY) -m bench.$$part"; \
	  $(PY) -m bench.$$part || missed="$$missed $$part"; done; \
	  if [ -n "$$missed" ]; then echo "bench: targets missed in:$$missed" >&2; exit 1; fi

clean:
	rm -rf cdk.out .build .petrel
