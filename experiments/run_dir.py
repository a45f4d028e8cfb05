"""The life cycle of a pre-registered run directory, shared by every experiment script.

``records → stats → report`` lives in :mod:`records`; this module holds what was copied between the scripts:

- :func:`carry_resume`: on ``--resume``, the previous ``config.json`` (its deviations carried over, plus the
  plan's "resumed with different code" deviation when the script changed between sessions);
- :func:`save_config`: write ``config.json``, appending this session to the previous sessions;
- :func:`write_report`: ``results.json`` and ``report.md`` recomputed from the records (the same
  ``summarize``/``render`` that ``recompute.py`` replays), the figures, and the copy under ``docs/`` for a
  default run written to ``runs/<name>``;
- :func:`parser`: the command-line options every script takes (``--quick --resume --out --threads
  --report-only``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
import hashlib
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import _common as C
import prereg_plan as P
import records as RC

ROOT = Path(__file__).resolve().parents[1]
RESUMED_WITH_OTHER_CODE = "resumed with different code (plan §8): the run's code changed between sessions"

Figure = Callable[[Mapping[str, Any], list[dict[str, Any]], Mapping[str, Any], Path], Any]


@dataclass
class PlanConfig:
    """Run settings shared by the plan-driven scripts; ``plan`` is the plan's TOML block (a quick mode shrinks
    a copy of it, the file is never edited) and ``deviations`` the plan deviations recorded so far."""

    NAME: ClassVar[str] = "run"  # the experiment's name: runs/<NAME>, runs/<NAME>_quick
    PLAN: ClassVar[str] = ""  # the plan's path from the repository root

    mode: str = "default"
    out: str = "runs/run"
    threads: int = 0
    plan: dict[str, Any] = field(default_factory=dict)
    deviations: list[str] = field(default_factory=list)

    @staticmethod
    def shrink(plan: Mapping[str, Any]) -> dict[str, Any]:
        """The plan entries a ``--quick`` run overrides (none here; a script's Config narrows its plan)."""
        return {}

    @classmethod
    def preset(cls, *, quick: bool = False, out: Optional[str] = None, threads: int = 0) -> "PlanConfig":
        """The default run (the plan as written) or the quick one (a copy shrunk by :meth:`shrink`)."""
        plan = P.read_plan(cls.PLAN)
        if quick:
            plan.update(cls.shrink(plan))
        return cls(mode="quick" if quick else "default", out=out or f"runs/{cls.NAME}{'_quick' if quick else ''}",
                   threads=threads, plan=plan)


def code_sha(path: str | Path) -> str:
    """sha256 of a script's source: recorded in ``config.json``; a resume under other code is a deviation."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def open_run(cfg: Any, plan_path: str, code_sha: str, resume: bool,
             config_doc: Callable[[dict[str, Any]], dict[str, Any]], *, seed: Optional[int] = None,
             ) -> tuple[Path, RC.Records]:
    """Start (or resume) a run in ``cfg.out``: refuse a default run from an uncommitted plan, set the torch threads
    (and the seeds), carry the deviations of a resumed run, open the records and write ``config.json``
    (``config_doc(prereg)``). Returns the run directory and its records."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    prereg = P.plan_commit(plan_path)
    P.require_committed(prereg, cfg.mode)
    C.set_threads(cfg.threads)
    if seed is not None:
        C.seed_everything(int(seed))
    old = carry_resume(out, cfg, code_sha, resume)
    records = RC.Records(out / RC.RECORDS, fresh=not resume)
    save_config(out, config_doc(prereg), old)
    return out, records


def carry_resume(out: Path, cfg: Any, code_sha: str, resume: bool) -> Optional[dict[str, Any]]:
    """The previous ``config.json`` of ``out`` when resuming (else ``None``); carries its deviations into
    ``cfg.deviations`` and adds the code-change deviation once when ``code_sha`` differs from the recorded one."""
    path = out / RC.CONFIG
    if not (resume and path.is_file()):
        return None
    old = RC.read_json(path)
    cfg.deviations = list(old["config"]["deviations"])
    if old.get("code_sha256") != code_sha and not any(d.startswith("resumed with different code") for d in cfg.deviations):
        cfg.deviations.append(RESUMED_WITH_OTHER_CODE)
    return old


def save_config(out: Path, config: dict[str, Any], old: Optional[Mapping[str, Any]]) -> None:
    """Write ``config.json``; a resumed run keeps the earlier sessions before this one."""
    if old is not None:
        config["sessions"] = list(old.get("sessions", [])) + list(config.get("sessions", []))
    RC.write_json(out / RC.CONFIG, config)


def verdicts_headline(results: Mapping[str, Any]) -> str:
    """"H1 SUPPORTED, H2 …" from ``results["verdicts"]`` (a quick run has none: "NO VERDICT (quick)")."""
    v = results.get("verdicts")
    return ", ".join(f"{h} {w}" for h, w in v.items()) if v else "NO VERDICT (quick)"


def write_report(out: str | Path, name: str, summarize: Callable[..., Any], render: Callable[..., str], *,
                 figures: Sequence[tuple[str, Figure]] = (), headline: Callable[[Mapping[str, Any]], str] = lambda r: "",
                 ) -> dict[str, Any]:
    """Recompute ``results.json`` and ``report.md`` from the run directory, draw ``figures`` (``(file name,
    figure(results, records, config, path))``; a failing figure is skipped with a message: the numbers are in
    the report) and copy the report to ``docs/<name>.md`` for a default run in ``runs/<name>``."""
    out = Path(out)
    config = RC.read_json(out / RC.CONFIG)
    records = RC.read_records(out / RC.RECORDS)
    results = RC.roundtrip(summarize(records, config))
    RC.write_json(out / RC.RESULTS, results)
    text = render(results, config)
    text = text if text.endswith("\n") else text + "\n"
    (out / RC.REPORT).write_text(text, encoding="utf-8")
    for fname, draw in figures:
        try:
            draw(results, records, config, out / fname)
        except Exception as err:  # noqa: BLE001 - the figure is optional
            C.say(f"figure {fname} skipped: {type(err).__name__}: {err}")
    if config["config"]["mode"] == "default" and out.resolve() == (ROOT / "runs" / name).resolve():
        (ROOT / "docs" / f"{name}.md").write_text(text, encoding="utf-8")
    C.say(f"wrote {out / RC.REPORT}: {headline(results)}")
    return results


def main(argv: Optional[list[str]], doc: str, preset: Callable[..., Any], run: Callable[..., Any],
         report: Callable[[Path], Any], *, resume_help: str) -> Any:
    """The command line of a script with only the common options: ``--report-only`` re-renders ``--out``,
    otherwise ``run(preset(...), resume=)``."""
    a = parser(doc, resume_help=resume_help).parse_args(argv)
    cfg = preset(quick=a.quick, out=a.out, threads=a.threads)
    if a.report_only:
        return report(Path(cfg.out))
    return run(cfg, resume=a.resume)


def parser(doc: str, *, quick_help: str = "smoke test (never a verdict, never writes docs/)",
           resume_help: str = "continue a run in --out from its records") -> argparse.ArgumentParser:
    """The options every experiment takes; a script adds its own before ``parse_args``."""
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--resume", action="store_true", help=resume_help)
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--report-only", action="store_true")
    return ap
