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
    reader: bool = typer.Option(False, "--reader", help="Score the reader variant (MiniLM + the embedded "
                                "instruct model's view of who wrote the text) instead of the default judge"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Accuracy, per-label precision/recall and the confusion matrix of the judge against labelled text.

    With --labelled FILE the shipped judge is scored on your file (e.g. your model's generations, labelled
    under docs/judge_rubric.md). Without it, the judge is cross-validated on the shipped corpus of real
    steered generations, with no direction and no question in both the training and the test folds.
    --reader scores the reader variant the same way.
    """
    from ..judge import EmbeddingJudge

    from ..judge_validation import crossed_group_cv, format_validation_markdown, validate_labelled_file

    if labelled is not None:
        if not labelled.is_file():
            fail(f"--labelled {labelled} does not exist: pass a JSONL file of {{\"text\", \"label\"}} objects")
        res = validate_labelled_file(labelled, EmbeddingJudge.default(reader=reader))
        title = f"{'Reader-variant judge' if reader else 'Judge'} on {labelled}"
    else:
        res = crossed_group_cv(judge_params={"reader": True} if reader else None)
        res = {k: v for k, v in res.items() if k not in ("oof_proba", "tested_index", "fold_sizes")}
        title = f"{'Reader-variant judge' if reader else 'Judge'} on real generations (crossed grouped CV)"
    if as_json:
        emit_json(res)
    else:
        typer.echo(format_validation_markdown(res, title), nl=False)
