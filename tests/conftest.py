"""Shared fixtures: tiny random models built once per session, offline everywhere."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# `train.mixed_precision: auto` (the default) picks bf16 on CPUs with AMX or AVX512-BF16 and fp32
# elsewhere: the suite compares numbers at fp32 tolerances, so auto reads every CPU as one without
# fast bf16 and a test gives the same numbers on every machine (subprocesses inherit it). Fixtures
# that compare numbers also pin fp32 explicitly; tests of `auto` itself set this variable themselves.
os.environ["TUNEWRIGHT_CPU_BF16"] = "0"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """`tiny_model_dir("llama")` -> folder of a tiny random model + tokenizer (built once)."""
    from tunewright.lab.tiny import make_tiny_model

    cache: dict[str, str] = {}

    def build(arch: str = "llama") -> str:
        if arch not in cache:
            cache[arch] = str(make_tiny_model(tmp_path_factory.mktemp(f"tiny_{arch}"), arch))
        return cache[arch]

    return build


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (`pytestmark = pytest.mark.usefixtures("one_thread")`): on 2
    shared, busy cores a tiny model's forward is up to 10x faster on one thread than on two, whose
    handoffs cost more than the work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Keep tunewright's caches (tokenization, converted models) inside the test's tmp folder."""
    monkeypatch.setenv("TUNEWRIGHT_CACHE", str(tmp_path / "tw-cache"))


# ---------------------------------------------------------------- forked children that cannot hang the suite

class Child:
    """A forked copy of the test process running one function. Every wait is bounded: a child that
    does not finish (or report) in time gets SIGUSR1, which makes it dump its stack (faulthandler),
    then SIGKILL, and the test fails with that stack instead of hanging."""

    def __init__(self, pid: int, reports: int, stack_file, error_file):
        self.pid, self._reports, self.stack_file, self.error_file = pid, reports, stack_file, error_file
        self._buffer, self.lines, self.status = b"", [], None

    def _read(self, timeout: float) -> None:
        """Read what the child reported within `timeout` seconds (at least one chunk if any comes)."""
        import select
        import time

        if self._reports is None:
            time.sleep(timeout)
            return
        if not select.select([self._reports], [], [], timeout)[0]:
            return
        chunk = os.read(self._reports, 65536)
        if not chunk:  # the child closed its end: it exited
            os.close(self._reports)
            self._reports = None
            return
        self._buffer += chunk
        *done, self._buffer = self._buffer.split(b"\n")
        self.lines += [line.decode() for line in done]

    def _poll(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is not None

    def wait_for_report(self, wanted, timeout: float) -> str | None:
        """The first reported line for which `wanted(line)` holds; None if the child exited first."""
        import time

        deadline, seen = time.monotonic() + timeout, 0
        while True:
            for line in self.lines[seen:]:
                if wanted(line):
                    return line
            seen = len(self.lines)
            if self._reports is None and self._poll():
                return None
            if time.monotonic() > deadline:
                self.fail(f"reported nothing wanted in {timeout:.0f} s (last: {self.lines[-3:]})")
            self._read(0.05)

    def wait(self, timeout: float) -> int:
        """The child's wait status (os.waitpid's) once it ends; fails the test after `timeout` s."""
        import time

        deadline = time.monotonic() + timeout
        while not self._poll():
            if time.monotonic() > deadline:
                self.fail(f"did not end in {timeout:.0f} s")
            self._read(0.02)
        while self._reports is not None:  # drain what it reported before exiting
            self._read(0.5)
        return self.status

    def exit_code(self, timeout: float) -> int:
        """The child's exit code; fails the test when it was killed by a signal or raised."""
        status = self.wait(timeout)
        if os.WIFSIGNALED(status):
            pytest.fail(f"child {self.pid} was killed by signal {os.WTERMSIG(status)}")
        if os.WEXITSTATUS(status) == Child.RAISED:
            pytest.fail(f"child {self.pid} raised:\n{self.error_file.read_text()}")
        return os.WEXITSTATUS(status)

    def kill(self, sig) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def stack(self) -> str:
        """Ask the child for its stack (SIGUSR1 -> faulthandler), kill it, and return the stack."""
        import signal
        import time

        if not self._poll():
            self.kill(signal.SIGUSR1)
            deadline = time.monotonic() + 3  # faulthandler writes from the signal handler, at once
            while time.monotonic() < deadline and not (self.stack_file.exists() and self.stack_file.stat().st_size):
                time.sleep(0.05)
            time.sleep(0.1)  # the other threads' stacks follow the first
            self.kill(signal.SIGKILL)
            _, self.status = os.waitpid(self.pid, 0)  # SIGKILL cannot be ignored: this returns
        return self.stack_file.read_text() if self.stack_file.exists() else "(no stack written)"

    def fail(self, why: str) -> None:
        pytest.fail(f"child {self.pid} {why}; its stack:\n{self.stack()}", pytrace=False)

    RAISED = 70  # exit code of a child whose function raised (the traceback is in error_file)


def _in_child(fn, report_fd: int, stack_file, error_file) -> None:
    """Run `fn(report)` in the forked child and leave with os._exit (no pytest teardown, no atexit)."""
    code = Child.RAISED
    try:
        import faulthandler
        import signal
        import threading
        import traceback

        stack = open(stack_file, "w")  # kept open: faulthandler writes to its file descriptor
        faulthandler.register(signal.SIGUSR1, file=stack, all_threads=True)
        # Locks copied from the parent may be held there by a thread that does not exist here
        # (tqdm's monitor), or be a semaphore shared with the parent: a child killed while holding
        # it would leave the parent stuck. Progress bars in the child take a lock of its own.
        from tqdm import std
        from tqdm.auto import tqdm as auto_tqdm
        for cls in {std.tqdm, auto_tqdm}:
            cls.set_lock(threading.RLock())
        import torch
        torch.set_num_threads(1)  # one thread: the same arithmetic order in every child

        def report(text: str) -> None:
            os.write(report_fd, (text + "\n").encode())

        try:
            code = int(fn(report) or 0)
        except BaseException:
            error_file.write_text(traceback.format_exc())
            code = Child.RAISED
    finally:
        os._exit(code)


class Forker:
    """Starts `Child`ren whose files live in `folder`; `close()` kills and reaps those still running."""

    def __init__(self, folder):
        self.folder, self.children = folder, []

    def __call__(self, fn) -> Child:
        n = len(self.children)
        stack_file, error_file = self.folder / f"child-{n}.stack", self.folder / f"child-{n}.error"
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            _in_child(fn, write, stack_file, error_file)
        os.close(write)
        self.children.append(Child(pid, read, stack_file, error_file))
        return self.children[-1]

    def close(self) -> None:
        for child in self.children:
            child.stack()  # kills and reaps a child still running
            if child._reports is not None:
                os.close(child._reports)


@pytest.fixture
def fork_child(tmp_path):
    """`fork_child(fn)` -> Child running `fn(report)` in a fork of this process (torch and
    transformers already imported: no start-up cost); `report(text)` sends a line to the test.
    Children still running when the test ends are killed."""
    forker = Forker(tmp_path)
    yield forker
    forker.close()


@pytest.fixture(scope="module")
def fork_child_module(tmp_path_factory):
    """`fork_child` for module-scoped fixtures."""
    forker = Forker(tmp_path_factory.mktemp("children"))
    yield forker
    forker.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fork_ranks(fork_child):
    """`fork_ranks(main, world=2)` -> [Child] running `main(rank, report)` in `world` forks of this
    process, each set up as torchrun sets up a rank (gloo on 127.0.0.1, a free port): a distributed
    run without the start-up cost of new processes."""
    def start(main, world: int = 2) -> list:
        port = _free_port()

        def rank(r: int):
            def run(report):
                from accelerate.state import AcceleratorState

                os.environ.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
                AcceleratorState._reset_state(reset_partial_state=True)  # the test process's state is single-process
                return main(r, report)
            return run

        return [fork_child(rank(r)) for r in range(world)]
    return start
