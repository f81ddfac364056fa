# lit-codec: the two commands are `make quickstart` and `make test`.
# Both create .venv when it is missing (CPU torch first, then the package) and
# are safe to run again. For a CUDA build of torch see README.md.

PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lit-codec-installed
QUICKSTART_DIR ?= quickstart


.PHONY: quickstart test test-fast bench lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# Two workers, one thread each, in a random order that changes every run: the seed is
# printed first; `make test PYTEST_SEED=N` repeats an order, PYTEST_ORDER=-p no:randomly
# keeps file order.
PYTEST_WORKERS ?= 2
PYTEST_SEED ?= $(shell od -An -N2 -tu2 /dev/urandom | tr -d ' ')
PYTEST_SEED := $(PYTEST_SEED)
PYTEST_ORDER ?= -p randomly --randomly-seed=$(PYTEST_SEED)

test: $(STAMP)
	@echo "test order: $(PYTEST_ORDER)"
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ORDER)

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not slow and not distributed"

quickstart: $(STAMP)
	$(PY) -m lit_codec.quickstart --workdir $(QUICKSTART_DIR)

# bench/learning_curve.py trains for 2 hours on prepared shards: it runs only when
# LEARNING_CURVE_SHARDS names them (make bench LEARNING_CURVE_SHARDS=data/speech_16k).
# descript-audio-codec and audiotools pin torchaudio, which has no build for this torch:
# they and audiotools' pure-Python imports go in with --no-deps (bench/learning_curve_peers.py).
LEARNING_CURVE_SHARDS ?=
LEARNING_CURVE_OUT ?= runs/learning_curve

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m pip install --quiet --no-deps "encodec==0.1.1" "vocos==0.1.0"
	$(PY) -m pip install --quiet --no-deps "descript-audio-codec==1.0.0" "descript-audiotools==0.7.2" \
		"argbind==0.3.9" "ffmpy==1.0.0" "flatten-dict==0.5.0" "importlib-resources==7.1.0" \
		"julius==0.2.8" "markdown-it-py==4.3.0" "mdurl==0.1.2" "randomname==0.2.1" "rich==15.0.0"
	$(PY) bench/data_prep_throughput.py
	$(PY) bench/loader_throughput.py
	$(PY) bench/rvq_speed.py
	$(PY) bench/codec_speed.py
	$(PY) bench/streaming_floor.py
	$(PY) bench/train_step.py
	$(PY) bench/fsq_speed.py
	$(PY) bench/frame_codec_speed.py
	$(PY) bench/onnx_speed.py
	$(PY) -m pip install --quiet --no-deps "moshi==0.2.13" "audiocraft==1.3.0" "MEGABYTE-pytorch==0.3.6" \
		"einops==0.8.2" "beartype==0.23.1"
	OMP_NUM_THREADS=1 $(PY) bench/lm_train.py
	OMP_NUM_THREADS=1 $(PY) bench/lm_train_peers.py
	OMP_NUM_THREADS=1 $(PY) bench/lm_generate.py
	OMP_NUM_THREADS=1 $(PY) bench/lm_generate_peers.py
	OMP_NUM_THREADS=1 $(PY) bench/lm_stream.py
	@if [ -n "$(LEARNING_CURVE_SHARDS)" ]; then \
		$(PY) bench/learning_curve.py --shards "$(LEARNING_CURVE_SHARDS)" --out "$(LEARNING_CURVE_OUT)"; \
	else echo "bench/learning_curve.py skipped: set LEARNING_CURVE_SHARDS=<16 kHz shard folder>"; fi

lint: $(STAMP)
	$(PY) -m ruff check lit_codec data_prep bench tests

clean:
	rm -rf $(QUICKSTART_DIR) .pytest_cache
