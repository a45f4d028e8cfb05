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
    embedding: bool = typer.Option(False, "--embedding", help="Score the frozen-embedding judge (EmbeddingJudge, "
                                   "which the committed experiments were scored with) instead of the default "
                                   "fine-tuned judge"),
    reader: bool = typer.Option(False, "--reader", help="Score the reader variant of the embedding judge (MiniLM + "
                                "the embedded instruct model's view of who wrote the text)"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Accuracy, per-label precision/recall and the confusion matrix of the judge against labelled text.

    The judge is the library default, the fine-tuned judge (docs/judge_finetuned.md); --embedding and --reader
    score the frozen-embedding judge and its reader variant. With --labelled FILE the shipped judge is scored on
    your file (e.g. your model's generations, labelled under docs/judge_rubric.md). Without it: for the
    embedding judges, a crossed grouped CV on the shipped corpus of real steered generations (no direction and
    no question in both the training and the test folds) is run now; for the fine-tuned judge, the stored
    figures of the same CV are printed (recomputing them trains six judges, ~45 min on 2 cores:
    `python experiments/judge_finetuned_cv.py`).
    """
    from ..judge import EmbeddingJudge, default_judge

    from ..judge_validation import crossed_group_cv, format_validation_markdown, validate_labelled_file

    if reader and embedding:
        fail("--reader already names the embedding judge (its reader variant): pass one of --embedding, --reader")
    finetuned = not (reader or embedding)
    name = "Fine-tuned judge (default)" if finetuned else "Reader-variant judge" if reader else "Embedding judge"
    if labelled is not None:
        if not labelled.is_file():
            fail(f"--labelled {labelled} does not exist: pass a JSONL file of {{\"text\", \"label\"}} objects")
        try:
            judge = default_judge() if finetuned else EmbeddingJudge.default(reader=reader)
        except (FileNotFoundError, ValueError) as err:
            fail(str(err))
        res = validate_labelled_file(labelled, judge)
        title = f"{name} on {labelled}"
    elif finetuned:
        from ..judge.finetuned import FINETUNED_VALIDATION_PATH, stored_validation

        try:
            res = stored_validation()
        except (OSError, ValueError, KeyError) as err:
            fail(f"{FINETUNED_VALIDATION_PATH} is not readable ({err}): rebuild it with "
                 "`python experiments/judge_finetuned_cv.py`")
        title = f"{name} on real generations (stored crossed grouped CV, {FINETUNED_VALIDATION_PATH.name})"
    else:
        res = crossed_group_cv(judge_params={"reader": True} if reader else None)
        res = {k: v for k, v in res.items() if k not in ("oof_proba", "tested_index", "fold_sizes")}
        title = f"{name} on real generations (crossed grouped CV)"
    if as_json:
        emit_json(res)
    else:
        typer.echo(format_validation_markdown(res, title), nl=False)
