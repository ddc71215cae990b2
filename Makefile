# Two commands set everything up: `make run` (serve on SQLite) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `make run` needs only the server's dependencies; `make test`, `lint` and the rest add the dev extras.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

TOOLS := $(VENV)/tools
CHECKOV := $(TOOLS)/checkov/.installed

.PHONY: run test lint install tools migrate bench clean lock

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# checkov lives in a virtualenv of its own: its pins (packaging<24) conflict with pytest's.
$(CHECKOV): deployment/tools/checkov.lock
	$(PYTHON) -m venv $(TOOLS)/checkov
	$(TOOLS)/checkov/bin/pip install --quiet --require-hashes --no-deps -r deployment/tools/checkov.lock
	touch $(CHECKOV)

tools: $(CHECKOV)

migrate: $(RUN_STAMP)
	$(BIN)/vibe-ensemble migrate

# make run PORT=8090 HOST=0.0.0.0 DATABASE_URL=postgresql+asyncpg://…  (each optional; the defaults are
# 127.0.0.1:8080 and SQLite in the per-user data directory, printed at start). VIBE_ settings pass
# through as they are, from the environment or the command line: make run VIBE_DATA_DIR=$HOME/team-a
PORT ?=
HOST ?=
DATABASE_URL ?=
SERVE_ARGS = $(if $(PORT),--port $(PORT)) $(if $(HOST),--host $(HOST)) $(if $(DATABASE_URL),--database-url $(DATABASE_URL))
run: $(RUN_STAMP)
	$(BIN)/vibe-ensemble serve --migrate $(strip $(SERVE_ARGS))

# Parallel on TEST_WORKERS processes (pytest-xdist); each module stays on one worker, so a module's
# server and browser start once. PYTEST_ARGS adds arguments, e.g. make test PYTEST_ARGS="-k mail".
# The suite starts hundreds of Python processes that import the same modules: they keep their
# bytecode (in git-ignored __pycache__ directories) even where the shell sets PYTHONDONTWRITEBYTECODE.
TEST_WORKERS ?= 4
PYTEST_ARGS ?=
test: $(STAMP) $(CHECKOV)
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/bandit -q -c pyproject.toml -r src

lock: $(STAMP)
	$(BIN)/python deployment/scripts/lock_requirements.py

# The benchmark suite (docs/performance.md, "Measuring"), a few minutes on two cores: the swarm at 10 and 50 agents against the bare
# SDK server (with /healthz beside the load), the live fan-out at 1,000 and at 10,000 WebSocket
# subscribers, and the reads at full size. Each prints its table and writes JSON to $(BENCH_OUT).
BENCH_OUT ?= bench/out
bench: $(STAMP)
	$(BIN)/python bench/swarm.py --json $(BENCH_OUT)/swarm.json
	$(BIN)/python bench/live_latency.py --transport ws --subscribers 1000 --projects 10 \
		--events 400 --interval 0.005 --json $(BENCH_OUT)/live-1000.json
	$(BIN)/python bench/live_latency.py --transport ws --subscribers 10000 --projects 100 \
		--events 400 --interval 0.005 --json $(BENCH_OUT)/live-10000.json
	$(BIN)/python bench/scale.py --json $(BENCH_OUT)/scale.json

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache bench/out
