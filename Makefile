# The README's commands. Only Python 3.11+ is needed; everything else is installed into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test image-test soak-test typecheck bench schema openapi clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Tidings needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# The example third-party plugin, installed the way a user installs one, so the conformance
# suite finds its tidings.providers and tidings.conformance entry points. --no-deps: its one
# dependency, tidings, is this tree, installed above; never resolve that name from the index.
$(VENV)/.installed-examples: $(VENV)/.installed-test examples/tidings-ntfy/pyproject.toml
	$(BIN)/python -m pip install --quiet --no-deps -e examples/tidings-ntfy
	@touch $@

run: $(VENV)/.installed
	$(BIN)/tidings serve

test: $(VENV)/.installed-examples
	$(BIN)/python -m pytest -q tests examples/tidings-ntfy/tests

# The container image, built from the real Dockerfile and run from its own filesystem with podman,
# as shared/CONTAINERS.md describes (needs root; installs podman and debootstrap with apt if
# missing, and makes the Debian base image once). Minutes of CPU: CI runs it, `make test` does not.
image-test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q tests/image/test_image.py

# The suite 20 times, two at a time: proof that it is green every time, not just once.
soak-test: $(VENV)/.installed-examples
	$(BIN)/python -m tests.soak $(ARGS)

$(VENV)/.installed-dev: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $@

typecheck: $(VENV)/.installed-dev
	$(BIN)/python -m mypy

# `make bench PROFILE=FILE` also profiles the server under the durable send load with py-spy
# (installed with the dev extras): FILE.svg a flame graph, FILE.json speedscope, else raw stacks.
bench: $(VENV)/.installed-test $(if $(PROFILE),$(VENV)/.installed-dev)
	$(BIN)/python -m tests.perf.run $(if $(PROFILE),--profile $(abspath $(PROFILE))) $(ARGS)

# After changing the policy models: regenerate the shipped and the published schema.
schema: $(VENV)/.installed
	$(BIN)/tidings schema > gateway/policy/policy.schema.json
	cp gateway/policy/policy.schema.json schema/policy.schema.json

# After changing a route, a request model or a view: regenerate the published API description.
openapi: $(VENV)/.installed
	$(BIN)/python -m gateway.http.openapi > schema/openapi.json

clean:
	rm -rf $(VENV) data soak-logs
