"""The ``judge`` command group: ``judge validate`` scores the archetype judge against labelled text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .base import app, emit_json, fail, friendly


judge_app = typer.Typer(no_args_is_help=True, help="The archetype judge: validate it on labelled text.")
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
