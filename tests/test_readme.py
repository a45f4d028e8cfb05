"""README.md is executed documentation (issue 20): a README that drifts from the code fails the build.

* Every ```python block runs, top to bottom, as ONE script in a subprocess (so a name used in a later block
  must be defined in an earlier one; no name comes from the test).
* Every ```bash block runs as one ``bash -euo pipefail`` script, in order, in the same scratch directory.
* A block preceded by ``<!-- readme-test: skip (reason) -->`` is not run; the reason is required and skips
  are counted, so they stay rare (``make demo``/``make test``/``make bench`` and the full-catalogue map).

Both run in a scratch working directory holding copies of ``examples/`` (so a config's relative paths land in
the scratch directory) and links to ``experiments/`` and ``docs/``, with ``PERSONA_VECTORS_CACHE`` pointing at
this session's cache (warm runs) and every network switch off. Blocks are found with markdown-it-py (the
CommonMark parser), not regular expressions.

Why no plugin: pytest-markdown-docs (0.9.2 on the index) re-executes every earlier block for each
``continuation`` block (the model would load once per block), pins markdown-it-py < 4 (this venv has 4.x) and
does not run shell blocks; phmdoctest needs a directive on every block and also skips shell blocks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
MAX_SKIPS = 4


def readme_blocks(text: str | None = None) -> list[dict]:
    """Fenced code blocks in document order: ``{"lang", "code", "line", "skip"}`` (skip: the reason or None)."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(text if text is not None else README.read_text())
    out = []
    for i, tok in enumerate(tokens):
        if tok.type != "fence":
            continue
        lang = (tok.info.split() or [""])[0].lower()
        prev = tokens[i - 1] if i else None
        m = SKIP.search(prev.content) if prev is not None and prev.type == "html_block" else None
        out.append({"lang": lang, "code": tok.content, "line": tok.map[0] + 1 if tok.map else 0,
                    "skip": m.group("reason").strip() if m else None})
    return out


def test_block_parser_and_skip_marker():
    text = ("x\n\n```python\na = 1\n```\n\n<!-- readme-test: skip (too long) -->\n```bash\nmake demo\n```\n\n"
            "```py\nb = 2\n```\n")
    b = readme_blocks(text)
    assert [x["lang"] for x in b] == ["python", "bash", "py"]
    assert [x["skip"] for x in b] == [None, "too long", None] and b[0]["code"] == "a = 1\n"


def test_readme_skips_are_rare_and_give_reasons():
    blocks = readme_blocks()
    skipped = [b for b in blocks if b["skip"] is not None]
    assert len(skipped) <= MAX_SKIPS, [b["line"] for b in skipped]
    assert all(len(b["skip"]) >= 10 for b in skipped), "every skip marker needs a reason"
    # a marker that does not sit right before a block is a typo, not a skip
    assert len(SKIP.findall(README.read_text())) == len(skipped)
    langs = {b["lang"] for b in blocks}
    assert langs <= {"python", "bash"}, f"README blocks in languages the test does not run: {langs}"


def test_map_help_roles_exist_in_the_catalogue():
    """Every snake_case role name a --help text mentions is a catalogue role (the README points to them)."""
    from typer.testing import CliRunner

    from persona_vectors.cli import app
    from persona_vectors.datasets import load_roles

    names = {r.name for r in load_roles()}
    not_roles = {"mean_activation", "record_activations", "mean_diff", "group", "last_prompt", "resid_post",
                 "resid_pre", "card", "facts", "ai_robot", "prompt_only"}
    for cmd in (["map", "--help"], ["personas", "--help"], ["extract", "--help"]):
        r = CliRunner().invoke(app, cmd, env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
        assert r.exit_code == 0, r.output
        mentioned = set(re.findall(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b", r.output)) - not_roles
        assert mentioned <= names, f"{' '.join(cmd)} names roles not in the catalogue: {mentioned - names}"


def test_readme_role_names_exist_in_the_catalogue():
    """`--role NAME` and `get_persona_vector(model, "NAME")` in the README name real catalogue entries."""
    from persona_vectors.personas import list_personas

    known = {r["name"] for r in list_personas()} | {"assistant"}
    text = "\n".join(b["code"] for b in readme_blocks())
    used = set(re.findall(r"--role\s+([A-Za-z0-9_]+)", text))
    used |= set(re.findall(r"get_persona_vector\(model,\s*\"([^\"]+)\"", text))
    used |= set(re.findall(r"--persona\s+([A-Za-z0-9_]+)", text))
    assert used and used <= known, f"README names personas not in the catalogue: {used - known}"


# ------------------------------------------------------------------------------------------------ execution


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from persona_vectors.models import cache_dir

    d = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", d / "examples")
    for name in ("experiments", "docs"):
        (d / name).symlink_to(ROOT / name, target_is_directory=True)
    env = {**os.environ, "PERSONA_VECTORS_CACHE": str(cache_dir()), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PERSONA_VECTORS_ALLOW_DOWNLOAD", None)
    return d, env


def _run(cmd: list[str], cwd: Path, env: dict, what: str, timeout: int) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    marks = [ln for ln in r.stderr.splitlines() if ln.startswith("[readme]")]
    if marks:
        print("\n".join(marks))
    if r.returncode != 0:
        pytest.fail(f"{what} failed (exit {r.returncode}, {dt:.0f} s)\n--- stdout (tail)\n{r.stdout[-4000:]}"
                    f"\n--- stderr (tail)\n{r.stderr[-6000:]}", pytrace=False)
    return dt


@pytest.mark.slow
def test_readme_python_blocks_run_as_one_script(workdir):
    d, env = workdir
    blocks = [b for b in readme_blocks() if b["lang"] == "python" and b["skip"] is None]
    assert len(blocks) >= 4
    parts = ["import sys as _readme_sys, time as _readme_time\n_readme_t0 = _readme_time.perf_counter()\n"]
    for b in blocks:  # one script; the markers say (on stderr) which README line a failure or a slow step is at
        parts.append(f"# ---- README.md line {b['line']}\n"
                     f"print(f'[readme] block at README line {b['line']} starts at "
                     f"{{_readme_time.perf_counter() - _readme_t0:.0f}} s', file=_readme_sys.stderr, flush=True)\n"
                     + b["code"])
    script = d / "readme_script.py"
    script.write_text("\n".join(parts))
    dt = _run([sys.executable, str(script)], d, env, "README's Python blocks (as one script)", timeout=1800)
    print(f"README python script: {dt:.0f} s")


@pytest.mark.slow
def test_readme_cli_blocks_run(workdir):
    d, env = workdir
    blocks = [b for b in readme_blocks() if b["lang"] == "bash" and b["skip"] is None]
    assert any("persona-vectors " in b["code"] for b in blocks)
    for b in blocks:
        dt = _run(["bash", "-euo", "pipefail", "-c", b["code"]], d, env,
                  f"README bash block at line {b['line']}:\n{b['code']}", timeout=1800)
        print(f"README bash block at line {b['line']}: {dt:.0f} s")
