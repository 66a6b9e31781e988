# Two commands on a fresh machine: `make demo` (the local stack, embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The oldest FastAPI the project supports, beside the venv's newest: tests/integration/instrumentation/
# test_fastapi_versions.py runs the FastAPI tests again on it.
OLDEST_FASTAPI := $(VENV)/fastapi-0.115.0

.PHONY: demo up test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tools.stack demo

up: $(STAMP)
	$(PY) -m tools.stack up

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

$(OLDEST_FASTAPI)/.installed: $(STAMP)
	$(PY) -m pip install -q --target $(OLDEST_FASTAPI) --no-deps fastapi==0.115.0 starlette==0.38.6
	touch $@

# pytest exits 5 when it collected no test: that is a failure here, never a silent pass.
test: $(STAMP) lint $(OLDEST_FASTAPI)/.installed
	PHONOGLYPH_FASTAPI_TARGETS=$(abspath $(OLDEST_FASTAPI)) $(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

bench: $(STAMP)
	$(PY) bench/overhead.py
	$(PY) bench/collector.py

clean:
	rm -rf $(VENV) .stack
