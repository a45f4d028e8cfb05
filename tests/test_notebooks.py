"""Execute the jupytext notebooks in notebooks/ in quick mode (jupytext + nbclient); any cell error fails."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def test_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "ghost_angel", "persona_arithmetic"}


def _kernel_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Put this interpreter first on PATH so the "python3" kernelspec (argv "python") resolves to it even when
    # the kernelspec found is not the venv's own.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(PV_QUICK="1", PV_OUT=str(tmp_path / "out"), PYTHONUNBUFFERED="1")
    return env


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    assert any(c.cell_type == "markdown" for c in nb.cells) and len(nb.cells) >= 4
    env = _kernel_env(tmp_path)
    for k, v in env.items():  # the kernel inherits the environment of the process that launches it
        monkeypatch.setenv(k, v)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()  # raises CellExecutionError on the first failing cell
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    # the kernel ran the interpreter running the tests (the venv's), not some other python on the machine
    first = next(line for line in out.splitlines() if line.startswith("python:"))
    assert Path(first.split()[1]).resolve() == Path(sys.executable).resolve(), first
    assert "Traceback" not in out
