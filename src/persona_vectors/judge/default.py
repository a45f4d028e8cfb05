"""Which archetype judge the library uses when a caller does not pick one: :func:`default_judge`, and its history.

The choice is made by pre-registered tests, never by hand; each change names the plan and report that made it.
"""

from __future__ import annotations

from .embedding import EmbeddingJudge

DEFAULT_JUDGE_HISTORY: tuple[tuple[str, str, str], ...] = (
    ("2026-12-01", "FinetunedJudge", "experiments/prereg/judge_finetuned.md: ADOPT (crossed grouped CV on the corpus, "
     "held-out accuracy 0.769 vs 0.718)"),
    ("2026-12-02", "FinetunedJudge", "experiments/prereg/judge_fresh_test.md: NOT CONFIRMED on 360 fresh texts "
     "(0.697 vs 0.728, McNemar p 0.29); the default stayed by that plan's rule"),
    ("2026-12-02", "EmbeddingJudge", "experiments/prereg/judge_fresh_test2.md: TIE -> CALIBRATION: SWITCH on 360 new "
     "texts (0.711 vs 0.722, McNemar p 0.74; expected calibration error 0.035 vs 0.099)"),
)
"""(date, judge, the plan and verdict that made it the default), oldest first; the last row is in force."""


def default_judge() -> EmbeddingJudge:
    """The library's default archetype judge for new runs: the shipped frozen-embedding :class:`EmbeddingJudge`
    (``EmbeddingJudge.default()``, loaded from ``data/judge_real/embedding_judge.npz``).

    Chosen by ``experiments/prereg/judge_fresh_test2.md`` (``docs/judge_fresh_test2.md``): on 360 blind-labelled
    generations that no judge was trained, tuned, selected or tested on, the fine-tuned and frozen judges were
    equally accurate (0.722 vs 0.711, exact McNemar p 0.74), and the plan's rule gives a tie to the better
    calibrated judge (expected calibration error 0.035 vs 0.099), because corrected shares and every probability a
    report prints rely on calibration. The fine-tuned judge, the default from 2026-12-01 (it won the corpus's
    cross-validation, ``docs/judge_finetuned.md``), did not confirm that win on fresh text twice
    (``docs/judge_fresh_test.md``); it stays available as :meth:`FinetunedJudge.default`
    (CLI: ``--finetuned``). Neither judge meets issue 13's real-text targets (accuracy ≥ 0.85): check the judge
    on a blind-labelled sample of your own text (``persona-vectors judge validate --labelled FILE``) and, where a
    claim rests on a rare label such as ``supernatural``, report a blind reader's count beside the judge's.

    For any count a claim rests on, use :func:`~persona_vectors.judge.triage` (CLI ``judge triage``): the judge keeps
    its label where its top probability is at least the shipped threshold (0.75) and a blind reader labels the rest.
    Pre-registered on 360 new texts (``docs/judge_triage.md``): the judge kept 47.5 % of them at accuracy 0.871
    [0.813, 0.913], and judge + reader reached 0.892 against an independent reader, where the judge alone reached
    0.697.

    The CLI's ``sweep --judge``, ``summarize --judge`` and ``judge validate`` use it; rows it labels carry
    ``label_source = "embedding"``, whose held-out confusion matrix is
    ``judge_validation.held_out_confusion("embedding")``. :data:`DEFAULT_JUDGE_HISTORY` lists every change.
    """
    return EmbeddingJudge.default()
