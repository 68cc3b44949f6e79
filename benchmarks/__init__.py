"""Speed and memory of tunewright's loop against HF Trainer + PEFT, measured side by side.

    python -m benchmarks.run --suite cpu          # the default model on this machine's CPU
    python -m benchmarks.run --suite gpu          # random-initialised Llama/Qwen shapes on one GPU
    python -m benchmarks.run --suite ci           # tiny model: checks the harness itself

Each configuration runs in a fresh process; results are JSON lines plus a markdown table with the
ratios ours/B0 and ours/B1 under benchmarks/results/.
"""
