# Herald — one command each: `make demo`, `make test`.
# Needs only python3 (3.11+) and make; everything else is installed into .venv from uv.lock.

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never

.PHONY: install test check lint typecheck compose-check pytest fuzz demo bench bench-quick bench-cpu bench-alerts bench-rls bench-media fmt lock clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --compile-bytecode: every process (each test's worker subprocess too) starts from .pyc files
# even where PYTHONDONTWRITEBYTECODE is set; compiling the sources at each start cost a worker
# about 3 s.
$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

install: $(VENV)/.synced  ## create .venv and install the locked dependencies

test: check pytest  ## lint, type-check, validate compose.yaml, run every test

check: lint typecheck compose-check

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

compose-check: install
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

# pytest exits 5 when it collects nothing; make treats that as the failure it is. The slowest
# tests are listed at the end: the suite must stay under 12 minutes on a 2-core machine.
# Two test processes (pytest-xdist), each given whole files (a module's fixtures are made once)
# and its own database, broker key prefix and virtual host (tests/conftest.py). Most tests wait
# on the workers and servers they start, so two share two cores well. The API's schemathesis
# run is a pytest of its own (under xdist its per-operation parametrisation runs one operation),
# alongside the others (its own database too; the two cores had room: 8 min 20 s with it
# alongside, 8 min 41 s + 1 min 55 s one after the other); its output follows theirs.
SCHEMA_TESTS := tests/integration/api/test_schema_conformance.py
pytest: install
	$(BIN)/python -m compileall -q herald tests bench
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	$(BIN)/pytest -q --durations=5 -p no:xdist $(SCHEMA_TESTS) >"$$log" 2>&1 & schema=$$!; \
	$(BIN)/pytest -q --durations=15 -n 2 --dist loadfile --ignore=$(SCHEMA_TESTS); others=$$?; \
	wait $$schema; conformance=$$?; \
	echo "== $(SCHEMA_TESTS) (run alongside) =="; cat "$$log"; \
	echo "pytest: exit $$others (the suite), $$conformance (schema conformance)"; \
	test $$others -eq 0 && test $$conformance -eq 0

# The API's schemathesis run with fresh random data and more examples than the suite's fixed
# seed: what found the refusals of schema-valid input in 2e56fe5. A failure prints the case.
FUZZ_EXAMPLES ?= 100
fuzz: install  ## fuzz every API operation with fresh random data, FUZZ_EXAMPLES (100) each (~7 min)
	HERALD_FUZZ_RANDOM=1 HERALD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
		$(BIN)/pytest -q -p no:xdist -p no:cacheprovider $(SCHEMA_TESTS)

demo: install  ## run the end-to-end demo on embedded defaults (no servers needed)
	$(BIN)/herald demo

bench: install  ## pipeline throughput, latency, memory, fairness, CPU per post (Postgres, Redis, RabbitMQ)
	$(BIN)/python -u -m bench.pipeline

bench-quick: install  ## the same, scaled down (a few minutes)
	$(BIN)/python -u -m bench.pipeline --quick

bench-cpu: install  ## CPU per publish in one process, telemetry on against off, and by part (needs Postgres)
	$(BIN)/python -u -m bench.publish_cpu --by-part

bench-alerts: install  ## alert rules, health and /metrics over 1 M then 5 M attempts (needs Postgres and Redis)
	$(BIN)/python -u -m bench.alerts

bench-rls: install  ## the publish path's database cost with and without row-level security
	$(BIN)/python -u -m bench.rls

bench-media: install  ## peak memory of publishing a 200 MB video to X (sandbox in its own process)
	$(BIN)/python -u -m bench.media

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: $(UV)  ## re-resolve uv.lock after editing pyproject.toml
	$(UV) lock

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache .hypothesis
