"""Two CPU processes on gloo (torchrun) give the loss curve of one process with the same global
batch, and the data is tokenized once, by the main process, into the cache."""

import json
import os
import subprocess
import sys

import pytest
import yaml


@pytest.mark.slow
def test_two_processes_match_one_and_tokenize_once(tmp_path, tiny_model_dir):
    from tunewright.run import train
    from tunewright.training.logging import read_metrics

    rows = [{"instruction": f"Say the number {i} twice.", "input": "", "output": f"{i} {i}" + " and more" * (i % 5)}
            for i in range(48)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"model": {"name": tiny_model_dir("llama")},
           "data": {"datasets": [{"path": str(data), "format": "alpaca"}], "template": "alpaca", "cutoff_len": 64},
           "method": {"name": "lora", "r": 4, "lora_dropout": 0.0},
           "train": {"batch_size": 8, "micro_batch_size": 2, "max_steps": 4, "learning_rate": 0.01},
           "output": {"dir": str(tmp_path / "runs"), "name": "two"}}
    recipe = tmp_path / "two.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    trace = tmp_path / "trace.txt"
    env = {**os.environ, "TUNEWRIGHT_TRACE_TOKENIZE": str(trace), "OMP_NUM_THREADS": "1"}
    # torchrun, not `accelerate launch --cpu --num_processes 2`, which silently runs one process
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "-m", "tunewright.cli", "train", str(recipe)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    events = [line.split() for line in trace.read_text().splitlines()]
    assert sorted({(rank, world) for rank, world, _, _ in events}) == [("0", "2"), ("1", "2")]
    assert [(rank, event) for rank, _, event, _ in events] == [("0", "miss"), ("1", "hit")]

    one = train({**cfg, "output": {**cfg["output"], "name": "one"}})
    curve_one = [m["loss"] for m in read_metrics(one.run_dir)]
    curve_two = [m["loss"] for m in read_metrics(tmp_path / "runs" / "two")]
    assert len(curve_two) == 4
    assert curve_two == pytest.approx(curve_one, rel=1e-6)
    norms = [m["grad_norm"] for m in read_metrics(tmp_path / "runs" / "two")]
    assert norms == pytest.approx([m["grad_norm"] for m in read_metrics(one.run_dir)], rel=1e-5)


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path, tiny_model_dir, fork_ranks):
    """SIGTERM reaches one process of a two-process gloo run (a scheduler preempting one node):
    both ranks stop after the same step, that step is checkpointed, and neither waits forever for
    the other. The ranks are forks of this process (no import cost), set up as torchrun would."""
    import signal

    from tunewright.training.checkpoint import complete_checkpoints
    from tunewright.training.logging import read_metrics

    rows = [{"instruction": f"Say {i}.", "input": "", "output": f"{i} " * (1 + i % 3)} for i in range(32)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"model": {"name": tiny_model_dir("llama")},
           "data": {"datasets": [{"path": str(data), "format": "alpaca"}], "template": "alpaca", "cutoff_len": 64},
           "method": {"name": "lora", "r": 2, "lora_dropout": 0.0},
           "train": {"batch_size": 8, "micro_batch_size": 2, "max_steps": 6, "learning_rate": 0.01},
           "output": {"dir": str(tmp_path / "runs"), "name": "signalled"}}
    stop_at, per_step = 2, 8 // (2 * 2)  # micro-batches per step on each rank

    def main(rank: int, report) -> int:
        import tunewright
        from tunewright.objectives import causal_lm

        if rank == 1:  # only this rank is signalled: from its first forward of step `stop_at`
            real, calls = causal_lm.loss, [0]

            def loss(*args, **kwargs):
                calls[0] += 1
                if calls[0] == (stop_at - 1) * per_step + 1:
                    os.kill(os.getpid(), signal.SIGTERM)
                return real(*args, **kwargs)

            causal_lm.loss = loss
        result = tunewright.train(cfg)
        report(json.dumps({"steps": result.steps, "stopped_by": result.stopped_by}))
        return 0

    ranks = fork_ranks(main)
    assert [r.exit_code(timeout=60) for r in ranks] == [0, 0]  # a rank left waiting fails here, with its stack
    assert [json.loads(r.lines[-1]) for r in ranks] == [{"steps": stop_at, "stopped_by": "signal"}] * 2
    run_dir = tmp_path / "runs" / "signalled"
    assert [step for step, _ in complete_checkpoints(run_dir / "checkpoints")] == [stop_at]
    assert [m["step"] for m in read_metrics(run_dir)] == list(range(1, stop_at + 1))
    assert not (run_dir / "final").exists()  # a stopped run is resumed, not finished
