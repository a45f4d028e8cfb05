"""Two processes on one sweep store: the lock lets exactly one run, and a SIGKILLed holder never blocks a resume.

One ``tests/_sweep_child.py --serve`` process starts with the module (its imports overlap the parent's); it runs
the sweep it is sent on stdin and answers ``done N`` or ``locked MESSAGE``. The test process itself is the other
sweep process.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _sweep_child import build, slow_readout
from persona_vectors.sweep import SweepStoreLockedError, expand_grid, lock_path, run_sweep

CHILD = Path(__file__).with_name("_sweep_child.py")
START_TIMEOUT = 240


@pytest.fixture(scope="module")
def server():
    """A sweep process on the same tiny model, vector and config as :func:`_sweep_child.build`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHILD.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(CHILD), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    state = {"ready": False}

    def ready() -> subprocess.Popen:
        if not state["ready"]:
            assert _readline(proc, time.time() + START_TIMEOUT) == "ready"
            state["ready"] = True
        return proc

    try:
        yield ready
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if not f.closed:
                f.close()


@pytest.fixture(scope="module")
def setup(server, tiny):  # after `server`: the child's start-up overlaps the tiny model's
    torch.set_num_threads(1)
    return build(tiny)


def _readline(proc: subprocess.Popen, deadline: float) -> str:
    while time.time() < deadline:
        if proc.poll() is not None and not select.select([proc.stdout], [], [], 0)[0]:
            pytest.fail(f"child exited ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        if select.select([proc.stdout], [], [], 0.5)[0]:
            return proc.stdout.readline().decode().strip()
    pytest.fail("child did not answer in time")


def _send(proc: subprocess.Popen, line: str) -> None:
    proc.stdin.write(line.encode() + b"\n")
    proc.stdin.flush()


def _ids(path: Path) -> list[str]:
    return [json.loads(x)["row_id"] for x in path.read_text().splitlines() if x.strip()]


def test_two_sweeps_on_one_store_one_wins(server, setup, tmp_path):
    """Both start at once: one runs the grid, the other is refused naming the winner's PID; no duplicated rows."""
    tiny, cfg = setup
    child = server()
    out = tmp_path / "race.jsonl"
    msg = "results store {} is in use by PID {} (another sweep is running); wait for it or pass another --out"
    _send(child, f"{out} 0.3")  # 6 batches x 0.3 s: the winner holds the lock well past the loser's 1 s wait
    try:
        run_sweep(tiny, cfg, out, readouts=[slow_readout(0.3)], progress=False)
    except SweepStoreLockedError as err:
        assert str(err) == msg.format(out, child.pid)
        assert _readline(child, time.time() + 120).startswith("done ")
    else:
        assert _readline(child, time.time() + 120) == "locked " + msg.format(out, os.getpid())
    total = sum(len(b.rows) for b in expand_grid(cfg))
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == {r["row_id"] for b in expand_grid(cfg) for r in b.rows}
    assert not lock_path(out).exists(), "the lock file is removed when the sweep ends"


def test_stale_lock_after_sigkill_does_not_block(server, setup, tmp_path):
    """While a sweep holds the store a resume is refused; after a SIGKILL its lock file stays but blocks nothing."""
    tiny, cfg = setup
    out = tmp_path / "stale.jsonl"
    holder = server()
    _send(holder, f"{out} 0.6")
    total = sum(len(b.rows) for b in expand_grid(cfg))
    deadline = time.time() + 120
    while not (out.exists() and out.read_bytes().count(b"\n") >= 3):
        if time.time() > deadline or holder.poll() is not None:
            pytest.fail("the holder wrote no rows in time")
        time.sleep(0.02)
    lk = lock_path(out)
    assert f"pid: {holder.pid}\n" in lk.read_text()
    with pytest.raises(SweepStoreLockedError, match=f"is in use by PID {holder.pid} .*pass another --out"):
        run_sweep(tiny, cfg, out, progress=False)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    n_before = len(_ids(out))
    assert 3 <= n_before < total, "the kill should land mid-sweep"
    assert lk.exists() and f"pid: {holder.pid}\n" in lk.read_text(), "SIGKILL leaves the lock file behind"
    t0 = time.time()
    rep = run_sweep(tiny, cfg, out, readouts=[slow_readout(0.0)], progress=False)
    assert time.time() - t0 < 30
    assert rep.rows_skipped == n_before and rep.rows_written == total - n_before
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == total
    assert not lk.exists()
