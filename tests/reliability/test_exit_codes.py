"""Exit codes say what happened, and stops are prompt (issue 11, rows 2 and 12).

`tunewright train` stopped by SIGTERM / SIGINT saves at the step boundary and exits 143 / 130;
any other command stopped by a signal exits 130 / 143 with one line; a stop during a long
evaluation abandons it within seconds; a second signal leaves at once. Each case runs the CLI's
`main` in a forked child (and one through the installed console script) and sends it real signals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tunewright.cli import main
from tunewright.training.checkpoint import latest_checkpoint, verify

sys.path.insert(0, str(Path(__file__).parent))
from processes import fork, logged_steps, tiny_run, wait, wait_for  # noqa: E402


def _recipe(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / f"{cfg['output']['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _one_line(log: Path, expected: str) -> None:
    lines = [line for line in log.read_text().splitlines() if expected in line]
    assert lines, log.read_text()[-2000:]
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_train_stopped_by_a_signal_saves_then_exits_128_plus_the_signal(tmp_path, tiny_model_dir, sig, code, tally):
    cfg = tiny_run(tmp_path, tiny_model_dir("llama"), "stopped", train={"max_steps": 400}, output={"save_steps": 2})
    run_dir = tmp_path / "runs" / "stopped"
    pid = fork(lambda: main(["train", _recipe(tmp_path, cfg)]), tmp_path / "log")
    wait_for(lambda: latest_checkpoint(run_dir / "checkpoints") is not None, 60, "the first checkpoint", pid)
    os.kill(pid, sig)
    assert wait(pid, 30) == code
    _one_line(tmp_path / "log", f"stopped by {sig.name} at step")
    newest = latest_checkpoint(run_dir / "checkpoints")
    assert verify(newest) is None and not (run_dir / "final").exists()
    assert int(newest.name.split("-")[1]) == logged_steps(run_dir)[-1]["step"]  # saved at the step it stopped
    tally("exit codes checked")


def test_console_script_exits_143_on_sigterm(tmp_path, tiny_model_dir, tally):
    """The installed `tunewright` command (its `sys.exit(main())`), as a process manager sees it."""
    cfg = tiny_run(tmp_path, tiny_model_dir("llama"), "script", train={"max_steps": 400}, output={"save_steps": 2})
    script = Path(sys.executable).parent / "tunewright"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tunewright.cli"]
    run_dir = tmp_path / "runs" / "script"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen([*command, "train", _recipe(tmp_path, cfg)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env) as proc:
        try:
            wait_for(lambda: latest_checkpoint(run_dir / "checkpoints") is not None or proc.poll() is not None,
                     120, "the first checkpoint")
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 143, out[-2000:]
    assert "stopped by SIGTERM" in out and "Traceback" not in out
    tally("exit codes checked")


def _main_telling_when_generation_starts(argv: list[str], started: Path):
    """A child's body: `main(argv)`, touching `started` when text generation begins (after model
    loading, tokenization or a loss evaluation), so the signal lands inside generation."""
    def child():
        from tunewright.eval import generate as gen_module
        real = gen_module.generate

        def spy(*args, **kwargs):
            started.touch()
            return real(*args, **kwargs)
        gen_module.generate = spy
        return main(argv)
    return child


def test_ctrl_c_during_generate_exits_130_with_one_line(tmp_path, tiny_model_dir, tally):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Tell me about the number {i}.\n" for i in range(2000)))
    started = tmp_path / "started"
    argv = ["generate", tiny_model_dir("llama"), "--prompts-file", str(prompts), "--max-new-tokens", "64"]
    pid = fork(_main_telling_when_generation_starts(argv, started), tmp_path / "log")
    wait_for(started.exists, 60, "generation to start", pid)
    time.sleep(0.3)
    sent = time.monotonic()
    os.kill(pid, signal.SIGINT)
    assert wait(pid, 30) == 130
    assert time.monotonic() - sent < 5
    _one_line(tmp_path / "log", "interrupted by SIGINT: stopped")
    tally("exit codes checked")


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_chat_waiting_for_input_exits_on_a_signal(tmp_path, tiny_model_dir, sig, code, tally):
    read_end, write_end = os.pipe()  # stdin that never delivers a line: chat waits at its prompt
    pid = fork(lambda: main(["chat", tiny_model_dir("llama")]), tmp_path / "log", stdin_fd=read_end)
    wait_for(lambda: (tmp_path / "log").exists() and "you>" in (tmp_path / "log").read_text(), 60, "the chat prompt", pid)
    os.kill(pid, sig)
    try:
        assert wait(pid, 30) == code
    finally:
        os.close(read_end)
        os.close(write_end)
    _one_line(tmp_path / "log", f"interrupted by {sig.name}: stopped")
    tally("exit codes checked")


def test_stop_during_a_generation_eval_is_prompt_and_saves_the_step(tmp_path, tiny_model_dir, tally):
    """A SIGTERM that lands in a periodic generation eval (600 rows x 64 new tokens: about a minute
    on 2 cores) ends the run within seconds, with the checkpoint of the step the eval followed."""
    model = tiny_model_dir("llama")
    evals = tmp_path / "evals.jsonl"
    evals.write_text("".join(json.dumps({"instruction": f"Describe the number {i} at length.", "input": "",
                                         "output": "a long answer"}) + "\n" for i in range(600)))
    cfg = tiny_run(tmp_path, model, "evaluated", train={"max_steps": 50},
                   data={"eval_datasets": [{"path": str(evals)}], "cutoff_len": 64},
                   eval={"steps": 2, "metrics": ["rougeL"], "max_new_tokens": 64},
                   output={"save_steps": None})
    run_dir, started = tmp_path / "runs" / "evaluated", tmp_path / "started"
    pid = fork(_main_telling_when_generation_starts(["train", _recipe(tmp_path, cfg)], started), tmp_path / "log")
    wait_for(started.exists, 60, "the eval's generation (after step 2)", pid)
    time.sleep(0.5)  # inside the generation of the eval rows
    sent = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    assert wait(pid, 60) == 143
    assert time.monotonic() - sent <= 5.0
    assert not any("eval_rougeL" in m for m in logged_steps(run_dir))  # abandoned, not half-scored
    newest = latest_checkpoint(run_dir / "checkpoints")
    assert newest is not None and newest.name == "step-2" and verify(newest) is None
    tally("prompt stops")


def test_a_second_signal_leaves_at_once(tmp_path, tiny_model_dir, tally):
    """The first SIGTERM asks for a save at the step boundary; the save is slow (a test pause of
    30 s inside it); a second SIGTERM ends the process at once, lines complete, no half checkpoint
    taken for a complete one."""
    cfg = tiny_run(tmp_path, tiny_model_dir("llama"), "twice", train={"max_steps": 400},
                   output={"save_steps": None})
    run_dir = tmp_path / "runs" / "twice"
    pid = fork(lambda: main(["train", _recipe(tmp_path, cfg)]), tmp_path / "log",
               env={"TUNEWRIGHT_TEST_PAUSE_IN_SAVE": "30"})
    wait_for(lambda: len(logged_steps(run_dir)) >= 3, 60, "training steps", pid)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: any((run_dir / "checkpoints").glob(".tmp-step-*")), 30, "the stop's save", pid)
    sent = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    assert wait(pid, 30) == 143
    assert time.monotonic() - sent < 3
    assert latest_checkpoint(run_dir / "checkpoints") is None  # the half-written save has no marker
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line)["step"] for line in lines)  # every line whole
    assert not (run_dir / ".lock").read_text()  # released on the way out
    tally("prompt stops")
