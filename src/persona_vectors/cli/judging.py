"""The ``judge`` command group: ``judge validate`` scores the archetype judge against labelled text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .base import app, check_output_file, emit_json, fail, friendly


judge_app = typer.Typer(no_args_is_help=True, help="The archetype judge: validate it on labelled text, triage texts between judge and reader.")
app.add_typer(judge_app, name="judge")


@judge_app.command("validate")
@friendly
def judge_validate_command(
    labelled: Optional[Path] = typer.Option(None, "--labelled", help="JSONL of {\"text\", \"label\"} objects (default: "
                                            "the shipped real-generation corpus, by crossed grouped CV)"),
    finetuned: bool = typer.Option(False, "--finetuned", help="Score the fine-tuned judge (FinetunedJudge, the "
                                   "default from 2026-12-01 until the fresh-text tests) instead of the default "
                                   "frozen-embedding judge"),
    embedding: bool = typer.Option(False, "--embedding", help="Score the frozen-embedding judge (EmbeddingJudge): "
                                   "the default, named explicitly"),
    reader: bool = typer.Option(False, "--reader", help="Score the reader variant of the embedding judge (MiniLM + "
                                "the embedded instruct model's view of who wrote the text)"),
    recompute: bool = typer.Option(False, "--recompute", help="Without --labelled: run the embedding judge's "
                                   "crossed grouped CV now (minutes) instead of printing its stored figures"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Accuracy, per-label precision/recall and the confusion matrix of the judge against labelled text.

    The judge is the library default, the frozen-embedding judge (chosen by the pre-registered fresh-text test,
    docs/judge_fresh_test2.md); --finetuned and --reader score the fine-tuned judge and the reader variant. With
    --labelled FILE the shipped judge is scored on your file (e.g. your model's generations, labelled under
    docs/judge_rubric.md). Without it the stored figures of the crossed grouped CV on the shipped corpus of real
    steered generations (no direction and no question in both the training and the test folds) are printed;
    --recompute runs that CV now for the embedding judges (the fine-tuned judge's trains six judges, ~45 min on
    2 cores: `python experiments/judge_finetuned_cv.py`).
    """
    from ..judge import EmbeddingJudge, FinetunedJudge, default_judge
    from ..judge_validation import crossed_group_cv, format_validation_markdown, validate_labelled_file

    if sum((finetuned, embedding, reader)) > 1:
        fail("--finetuned, --embedding and --reader each name one judge: pass at most one of them")
    if recompute and (labelled is not None or finetuned):
        fail("--recompute reruns the embedding judges' corpus CV: drop --labelled / --finetuned, or drop --recompute")
    name = "Fine-tuned judge" if finetuned else "Reader-variant judge" if reader else "Embedding judge (default)"
    if labelled is not None:
        if not labelled.is_file():
            fail(f"--labelled {labelled} does not exist: pass a JSONL file of {{\"text\", \"label\"}} objects")
        try:
            judge = (FinetunedJudge.default() if finetuned else EmbeddingJudge.default(reader=True) if reader
                     else default_judge())
        except (FileNotFoundError, ValueError) as err:
            fail(str(err))
        res = validate_labelled_file(labelled, judge)
        title = f"{name} on {labelled}"
    elif recompute:
        res = crossed_group_cv(judge_params={"reader": True} if reader else None)
        res = {k: v for k, v in res.items() if k not in ("oof_proba", "tested_index", "fold_sizes")}
        title = f"{name} on real generations (crossed grouped CV, recomputed)"
    else:
        from ..judge import VALIDATION_PATH
        from ..judge.finetuned import FINETUNED_VALIDATION_PATH, stored_validation
        from ..judge_validation import stored_held_out

        path = FINETUNED_VALIDATION_PATH if finetuned else VALIDATION_PATH
        rebuild = "judge_finetuned_cv.py" if finetuned else "judge_validation_report.py"
        try:
            res = stored_validation() if finetuned else stored_held_out("embedding+reader" if reader else "embedding")
        except (OSError, ValueError, KeyError) as err:
            fail(f"{path} is not readable ({err}): rebuild it with `python experiments/{rebuild}`")
        res = {k: v for k, v in res.items() if k not in ("oof_proba", "tested_index", "fold_sizes")}
        title = f"{name} on real generations (stored crossed grouped CV, {path.name})"
    if as_json:
        emit_json(res)
    else:
        typer.echo(format_validation_markdown(res, title), nl=False)


def _read_texts(path: Path) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` from a JSONL of ``{"text"[, "id"]}`` objects; a sweep row's ``row_id`` serves as its id, and
    a row with neither is named ``"L<line number>"``."""
    from collections import Counter

    from .._infra.files import jsonl_objects

    ids, texts = [], []
    for i, row in jsonl_objects(path, '{"text": ...}'):
        if not isinstance(row.get("text"), str):
            fail(f"{path}:{i} needs a JSON object with a string \"text\" (and optionally an \"id\")")
        texts.append(row["text"])
        key = next((row[k] for k in ("id", "row_id") if row.get(k) is not None), None)
        ids.append(str(key) if key is not None else f"L{i}")
    if not texts:
        fail(f"{path} holds no texts: write one {{\"text\": ...}} object per line")
    dup = sorted(x for x, n in Counter(ids).items() if n > 1)
    if dup:
        fail(f"{path}: id {dup[0]!r} appears more than once; give every text its own \"id\"")
    return ids, texts


def _read_readings(path: Path, ids: list[str]) -> dict[str, str]:
    """``{id: label}`` from a reader's JSONL of ``{"id", "label"}`` objects; labels must be judge labels."""
    from .._infra.files import jsonl_objects
    from ..judge import LABELS

    known, out = set(ids), {}
    for i, row in jsonl_objects(path, '{"id": ..., "label": ...}'):
        if row.get("id") not in known:
            fail(f"{path}:{i}: id {row.get('id')!r} is not one of the texts' ids")
        if row.get("label") not in LABELS:
            fail(f"{path}:{i}: label {row.get('label')!r} is not one of the judge's labels: {', '.join(LABELS)}")
        out[row["id"]] = row["label"]
    return out


@judge_app.command("triage")
@friendly
def judge_triage_command(
    texts: Path = typer.Argument(..., help="JSONL of {\"text\"[, \"id\"]} objects, e.g. a sweep's rows: the "
                                 "generations to label (ids: \"id\", else a sweep row's \"row_id\", else L<line number>)"),
    out: Path = typer.Option(..., "--out", help="JSONL written with one row per text: id, label (null where a "
                             "reader must label it), judge_label, confidence, source"),
    to_read: Optional[Path] = typer.Option(None, "--to-read", help="JSONL written with the texts left to a reader, "
                                           "as shuffled {\"id\", \"text\"} lines and nothing else (a blind shard)"),
    readings: Optional[Path] = typer.Option(None, "--readings", help="A reader's JSONL of {\"id\", \"label\"} for the "
                                            "texts left to reading: --out then holds every text's final label"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Keep the judge's label at or above this top "
                                              "probability (default: the shipped, validated policy)"),
    force: bool = typer.Option(False, "--force", help="Replace --out / --to-read if they exist"),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON"),
) -> None:
    """Label what the default judge is sure of and leave the rest to a blind reader.

    The default judge keeps its label where its top probability is at least the shipped threshold (fitted on 720
    blind-labelled real generations, tested pre-registered on new ones: docs/judge_triage.md); the other texts go
    to --to-read for a reader working under docs/judge_rubric.md. Run again with --readings to merge the reader's
    labels into --out. Counts a claim rests on should come from the merged labels, not the judge alone.
    """
    import json
    import random

    from ..io import atomic_file
    from ..judge import TriagePolicy, triage

    if not texts.is_file():
        fail(f"{texts} does not exist: pass a JSONL file of {{\"text\"}} objects")
    for path, flag in ((out, "--out"), (to_read, "--to-read")):
        if path is None:
            continue
        check_output_file(path, flag)
        if path.exists() and not force:
            fail(f"{flag} {path} exists: choose another path, or pass --force to replace it")
    if readings is not None and not readings.is_file():
        fail(f"--readings {readings} does not exist: pass the reader's JSONL of {{\"id\", \"label\"}} objects")
    ids, items = _read_texts(texts)
    try:
        result = triage(items, threshold=threshold)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    final: list[Optional[str]] = list(result.labels)
    if readings is not None:
        got = _read_readings(readings, ids)
        missing = [ids[i] for i in result.to_read if ids[i] not in got]
        if missing:
            fail(f"--readings {readings} has no label for {len(missing)} text(s) left to a reader (e.g. "
                 f"{missing[0]!r}): label every text in the --to-read file")
        final = result.merge({i: got[ids[i]] for i in result.to_read})
    sources = result.sources()
    with atomic_file(out) as tmp:
        tmp.write_text("".join(json.dumps({"id": i, "label": lab, "judge_label": jl, "confidence": round(float(c), 6),
                                           "source": src}) + "\n"
                               for i, lab, jl, c, src in zip(ids, final, result.judge_labels, result.confidence,
                                                             sources)))
    if to_read is not None:
        order = list(result.to_read)
        random.Random(0).shuffle(order)
        with atomic_file(to_read) as tmp:
            tmp.write_text("".join(json.dumps({"id": ids[i], "text": items[i]}) + "\n" for i in order))
    summary = {"n": len(items), "threshold": result.threshold, "judged": len(items) - len(result.to_read),
               "to_read": len(result.to_read), "coverage": result.coverage, "out": str(out),
               "to_read_file": str(to_read) if to_read is not None else None, "merged": readings is not None}
    if threshold is None:
        cal = TriagePolicy.default().calibration
        summary["validated"] = {k: cal.get(k) for k in ("n", "coverage", "accuracy", "accuracy_ci95")}
    if as_json:
        emit_json(summary)
        return
    where = (f"labelled from {readings}" if readings is not None else
             f"left to a reader -> {to_read if to_read is not None else '(pass --to-read FILE to write them)'}")
    typer.echo(f"{summary['judged']} of {summary['n']} texts labelled by the judge (top probability >= "
               f"{result.threshold}); {summary['to_read']} {where}")
    if threshold is None:
        v = summary["validated"]
        typer.echo(f"threshold validated on {v['n']} blind-labelled real generations: covered accuracy "
                   f"{v['accuracy']:.3f} [{v['accuracy_ci95'][0]:.3f}, {v['accuracy_ci95'][1]:.3f}] at coverage "
                   f"{v['coverage']:.2f} (docs/judge_triage.md)")
    typer.echo(f"wrote {out}" + (" (judge + reader labels merged)" if readings is not None else ""))
