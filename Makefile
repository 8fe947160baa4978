# The README's two commands. Both work on a fresh Debian machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test venv lint bench

$(BIN)/helpdesk: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/helpdesk

run: venv
	$(BIN)/helpdesk db upgrade >/dev/null
	$(BIN)/helpdesk run

test: venv
	bash scripts/test-deps.sh
	$(BIN)/ruff check helpdesk tests $(wildcard bench)
	$(BIN)/mypy helpdesk
	$(BIN)/pytest -q -p no:cacheprovider

bench: venv
	bash scripts/test-deps.sh
	$(BIN)/python -m bench.run_all
