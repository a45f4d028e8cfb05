"""Concurrent saves and loads of one vector directory (issue 12, item 10).

Two processes save into the same directory at once (each alternating two different vectors, so a torn
pair would be visible), while a third loads it in a loop. Every save must succeed, every load must return
one of the written vectors whole, and the directory must end with exactly the vector's two files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from _vector_child import make
from persona_vectors import PersonaVector

CHILD = Path(__file__).with_name("_vector_child.py")
N_SAVES = 300


def _spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHILD.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _ready(p: subprocess.Popen) -> None:
    line = p.stdout.readline()  # type: ignore[union-attr]
    assert line.strip() == "ready", f"child failed to start: {line!r} {p.stderr.read() if p.poll() is not None else ''}"  # type: ignore[union-attr]


def _result(p: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_two_writers_and_a_reader_never_see_an_error_or_a_torn_vector(tmp_path):
    d = tmp_path / "v"
    make("init", 0).save(d)
    go, stop = tmp_path / "go", tmp_path / "stop"
    reader = _spawn("read", str(d), str(stop), str(go))
    writers = [_spawn("save", str(d), str(N_SAVES), tag, str(go)) for tag in ("a", "b")]
    try:
        for p in [reader, *writers]:
            _ready(p)
        t0 = time.perf_counter()
        go.touch()
        results = [_result(p) for p in writers]
        wall = time.perf_counter() - t0
        stop.touch()
        read = _result(reader)
    finally:
        stop.touch()
        for p in [reader, *writers]:
            if p.poll() is None:
                p.kill()
    per_writer = ", ".join(f"{r['seconds']:.2f} s" for r in results)
    print(f"\n{2 * N_SAVES} concurrent saves in {wall:.2f} s ({per_writer} per writer); {read['loads']} loads meanwhile")
    assert [r["errors"] for r in results] == [[], []]
    assert read["errors"] == [] and read["torn"] == 0
    assert read["loads"] > 0 and set(read["seen"]) & {"a-0", "a-1", "b-0", "b-1"}
    # the directory holds the vector's two files and nothing else (no temporary file or backup is left)
    assert sorted(p.name for p in d.iterdir()) == ["vector.json", "vector.safetensors"]
    final = PersonaVector.load(d)
    assert final.provenance.name in {"a-1", "b-1"}  # each writer's last save is its vector 1
    assert torch.equal(final.directions, make(final.provenance.name[0], 1).directions)
