# The only commands a person needs: `make dev` runs the app locally, `make test` runs every check.
# Every target installs what it needs first, idempotently.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt cdk/requirements.txt | sha1sum | cut -c1-12)
# cfn-lint and the SAM translator pin an older pydantic than the app: a venv of their own.
CFNLINT := .venv-cfnlint
CFNLINT_STAMP := $(CFNLINT)/.installed-$(shell sha1sum cdk/requirements-cfnlint.txt | cut -c1-12)
# The pinned CDK CLI, for make synth and make deploy.
CDK_STAMP := cdk/node_modules/.installed-$(shell sha1sum cdk/package-lock.json | cut -c1-12)
# Synthesis runs offline: no credentials, no lookups, no Docker, no telemetry.
CDK := cd cdk && PATH="$(CURDIR)/$(BIN):$$PATH" AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-eu-west-2} \
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 CDK_DISABLE_CLI_TELEMETRY=true \
	npx --no-install cdk --no-notices
# The site's node packages, reinstalled when the lock file changes.
NODE_STAMP := frontend/node_modules/.installed-$(shell sha1sum frontend/package-lock.json | cut -c1-12)
# The browser tests drive Debian's Chromium (Playwright cannot download its own here).
CHROMIUM := /usr/bin/chromium

.PHONY: help install dev test lint typecheck unit bench capacity admin job clean site frontend-check synth deploy destroy chalice-config api-types screenshots bootstrap

help:
	@echo "make dev    run the site on http://127.0.0.1:5173 (API under /api) with a local AWS emulator"
	@echo "make test   lint, type-check and run every test"
	@echo "make bench  print cold-start, hashing, request-overhead and live-update figures"
	@echo "make capacity  print DynamoDB round trips and capacity units per route (docs/SCALING.md)"
	@echo "make admin USERNAME=alice   create or promote an administrator locally"
	@echo "make job NAME=backup|sweep  run a scheduled job once against the running make dev"
	@echo "make synth  synthesize every AWS stack offline (cdk/README.md)"
	@echo "make bootstrap  prepare your AWS account for CDK in both regions, once (cdk/README.md)"
	@echo "make deploy deploy every stack to your AWS account (cdk/README.md)"
	@echo "make destroy delete the stacks, keeping the table and data buckets"
	@echo "make chalice-config  regenerate the prod stage and policies in .chalice/ (cdk/README.md)"
	@echo "make api-types  regenerate the site's copy of the OpenAPI document and its TypeScript types"
	@echo "make screenshots  run the browser tests, refreshing the README's images in docs/screenshots"
	@echo "make audit  known vulnerabilities with a fix in the Python and npm packages (needs the network)"
	@echo "CI/CD       .github/workflows; the one-time AWS and GitHub set-up is in cdk/README.md (CI/CD)"

$(STAMP): requirements.txt requirements-dev.txt cdk/requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

$(NODE_STAMP): frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund
	@rm -f frontend/node_modules/.installed-*
	@touch $@

$(CFNLINT_STAMP): cdk/requirements-cfnlint.txt
	@test -x $(CFNLINT)/bin/python || $(PYTHON) -m venv $(CFNLINT)
	$(CFNLINT)/bin/python -m pip install --quiet --disable-pip-version-check -r cdk/requirements-cfnlint.txt
	@rm -f $(CFNLINT)/.installed-*
	@touch $@

$(CDK_STAMP): cdk/package.json cdk/package-lock.json
	cd cdk && npm ci --no-audit --no-fund
	@rm -f cdk/node_modules/.installed-*
	@touch $@

$(CHROMIUM):
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium

install: $(STAMP) $(NODE_STAMP)

dev: $(STAMP) $(NODE_STAMP)
	exec $(BIN)/python -m tools.devstack

# The static site in frontend/build; prints the first page's gzipped JS + CSS against its budget.
site: $(NODE_STAMP)
	cd frontend && npm run --silent build

# The OpenAPI document the API serves, and the site's TypeScript types generated from it
# (frontend/src/lib/openapi.json, api-schema.d.ts); tests/test_openapi.py fails when they are stale.
api-types: $(STAMP) $(NODE_STAMP)
	cd frontend && npm run --silent gen:api

frontend-check: $(NODE_STAMP)
	cd frontend && npm run --silent check && npm run --silent format:check

test: lint typecheck frontend-check unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/actionlint -no-color .github/workflows/*.yml

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy cdk/app.py

unit: $(STAMP) $(CFNLINT_STAMP) site $(CHROMIUM)
	$(BIN)/pytest

# The browser tests write their screenshots to .local/screenshots (ignored); this run writes them
# where the README shows them.
screenshots: $(STAMP) site $(CHROMIUM)
	SCREENSHOTS_DIR=docs/screenshots $(BIN)/pytest tests/test_site.py tests/test_site_accounts.py

# Every stack, offline, into cdk/cdk.out; cdk-nag runs during synthesis. Chalice only prints
# "Could not install dependencies" when a wheel is missing, so that line fails the build here.
# CONTEXT="-c domainName=example.com ..." overrides cdk/cdk.json for synth, deploy and destroy.
synth: $(STAMP) $(CDK_STAMP) site
	@mkdir -p .local && rm -rf cdk/cdk.out
	set -o pipefail; $(CDK) synth --quiet $(CONTEXT) 2>&1 | tee $(CURDIR)/.local/synth.log
	@! grep -q "Could not install dependencies" .local/synth.log || { echo "a Lambda dependency has no wheel"; exit 1; }
	$(BIN)/python -m tools.lambda_package cdk/cdk.out

# CDK's asset bucket and deployment roles, once per account, in the app's region and in us-east-1
# (certificates, WAF, the CloudFront alarm). Explicit environments, run outside cdk/ (no cdk.json):
# the CLI runs neither the app nor Python, so a fresh clone needs only node and credentials.
# ACCOUNT defaults to the one your credentials name; REGION to cdk.json's primaryRegion.
BOOTSTRAP_CDK := $(CURDIR)/cdk/node_modules/.bin/cdk
bootstrap: $(CDK_STAMP)
	@account="$${ACCOUNT:-$$(aws sts get-caller-identity --query Account --output text)}"; \
	region="$${REGION:-$$(node -p 'require("./cdk/cdk.json").context.primaryRegion')}"; \
	edge="$$(node -p 'require("./cdk/cdk.json").context.certificateRegion')"; \
	test -n "$$account" -a -n "$$region" || { echo "set ACCOUNT= and REGION="; exit 2; }; \
	set -x; cd / && JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 \
	CDK_DISABLE_CLI_TELEMETRY=true "$(BOOTSTRAP_CDK)" --no-notices bootstrap $(BOOTSTRAP_ARGS) \
		"aws://$$account/$$region" "aws://$$account/$$edge"

# Deploys the assembly make synth just built (so with the same CONTEXT) to the account your AWS
# credentials name; DEPLOY_ARGS for CLI options such as --require-approval never.
deploy: synth
	$(CDK) deploy --all --app cdk.out --require-approval broadening $(DEPLOY_ARGS)

# Deletes the stacks; the table and the data buckets are retained (cdk/README.md, Teardown).
destroy: $(STAMP) $(CDK_STAMP) site
	$(CDK) destroy --all $(CONTEXT)

# The prod stage of .chalice/config.json and .chalice/policy-prod*.json, for chalice deploy --stage
# prod, from the definitions the CDK app deploys (cdk/gatehouse_infra/runtime.py).
chalice-config: $(STAMP)
	$(BIN)/python -m tools.chalice_prod

# pip-audit and npm audit --omit=dev over what the Lambda, the tools, the site and the CDK app
# install; non-zero on a vulnerability with a fix, or when a target could not be audited
# (tools/audit.py). It needs the network, so it is not part of make test: the workflows run it.
.PHONY: audit
audit: $(STAMP)
	$(BIN)/python -m tools.audit

# make admin USERNAME=alice: create or promote an administrator in the running `make dev`.
admin: $(STAMP)
	@test -n "$(USERNAME)" || { echo "usage: make admin USERNAME=<name>"; exit 2; }
	AWS_ENDPOINT_URL=$${AWS_ENDPOINT_URL:-http://127.0.0.1:$${LOCAL_AWS_PORT:-5000}} \
	AWS_DEFAULT_REGION=eu-west-2 AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local \
	$(BIN)/python -m tools.admin "$(USERNAME)"

# The second step starts a local stack of its own and times API writes to WebSocket messages.
bench: $(STAMP)
	$(BIN)/python -m tools.bench
	$(BIN)/python -m tools.livebench

capacity: $(STAMP)
	$(BIN)/python -m tools.capacity

# make job NAME=backup|sweep: run the nightly backup or the upload sweep once, now, against the
# running `make dev` (the emulator's schedules never fire).
job: $(STAMP)
	@case "$(NAME)" in backup|sweep) ;; *) echo "usage: make job NAME=backup|sweep"; exit 2;; esac
	AWS_ENDPOINT_URL=$${AWS_ENDPOINT_URL:-http://127.0.0.1:$${LOCAL_AWS_PORT:-5000}} \
	AWS_DEFAULT_REGION=eu-west-2 AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local \
	$(BIN)/python -m tools.job "$(NAME)"

clean:
	rm -rf $(VENV) $(CFNLINT) .local .pytest_cache .mypy_cache .ruff_cache
	rm -rf cdk/node_modules cdk/cdk.out cdk/chalice.out
	rm -rf frontend/node_modules frontend/build frontend/.svelte-kit
