"""Helper for tests/test_sweep.py: a small sweep on the tiny model, runnable as a child process.

``python tests/_sweep_child.py OUT.jsonl DELAY [--wait]`` builds the model, prints ``ready``, (with ``--wait``
waits for a line on stdin), then runs the sweep, sleeping ``DELAY`` seconds per batch (in a read-out) so the
parent can SIGKILL it mid-run. The parent imports :func:`build` to rebuild the same model,
vector and config in-process.

``python tests/_sweep_child.py --serve`` builds the model, prints ``ready``, then runs one sweep per stdin line
``OUT DELAY`` and answers one line: ``done N`` (rows written) or ``locked MESSAGE`` (the store was in use); it
exits at end of input. tests/test_concurrency_sweep.py races two of them on one store.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import torch  # noqa: E402

PROMPTS = ["Who are you?", "Hi", "Name a colour."]


def build(model=None):
    """(model, cfg): the tiny model (seed 0), a fixed random vector on it, and the sweep config."""
    from conftest import make_tiny_model

    from persona_vectors import PersonaVector, Provenance
    from persona_vectors.sweep import SweepConfig

    if model is None:
        model = make_tiny_model()
    g = torch.Generator().manual_seed(123)
    d = torch.randn(model.n_layers, model.d_model, generator=g) * 0.1
    vec = PersonaVector(range(model.n_layers), d, Provenance(model_id=model.info.model_id,
                                                             fingerprint=model.info.fingerprint,
                                                             d_model=model.d_model, name="rand"))
    cfg = SweepConfig(vectors={"rand": vec}, alphas=[0.0, 1.0, 2.0], layers=[1, 2], prompts=list(PROMPTS),
                      max_new_tokens=4, batch_size=3, name="kill-test")
    return model, cfg


def slow_readout(delay: float):
    """A read-out that sleeps ``delay`` seconds per batch and records the batch size."""

    def readout(texts, rows):
        time.sleep(delay)
        return [{"batch_rows": len(texts)} for _ in texts]

    return readout


def main(argv: list[str]) -> None:
    from persona_vectors.sweep import run_sweep

    torch.set_num_threads(1)
    out, delay = Path(argv[1]), float(argv[2])
    model, cfg = build()
    print("ready", flush=True)
    if len(argv) > 3 and argv[3] == "--wait":  # let the parent overlap our start-up with its other tests
        sys.stdin.readline()
    run_sweep(model, cfg, out, readouts=[slow_readout(delay)], progress=False)
    print("done", flush=True)


def serve() -> None:
    from persona_vectors.sweep import SweepStoreLockedError, run_sweep

    torch.set_num_threads(1)
    model, cfg = build()
    print("ready", flush=True)
    for line in sys.stdin:
        out, delay = line.split()
        try:
            rep = run_sweep(model, cfg, Path(out), readouts=[slow_readout(float(delay))], progress=False)
        except SweepStoreLockedError as err:
            print(f"locked {err}", flush=True)
        else:
            print(f"done {rep.rows_written}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main(sys.argv)
