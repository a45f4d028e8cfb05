"""Blind labelling of generations under docs/judge_rubric.md: texts are shown shuffled, without their condition.

    python experiments/label_texts.py interactive --labeller NAME [--pass 1]      # one text at a time, keys 1-9
    python experiments/label_texts.py export --out blind.jsonl [--shard K/N] [--sample N] [--exclude-labelled]
    python experiments/label_texts.py import labels.jsonl --labeller NAME [--pass 1]
    python experiments/label_texts.py agreement [--pass-a 1 --pass-b 2]

The corpus (``generations.jsonl``) holds each text with its condition; labels (``labels.jsonl``) hold
``{"id", "label", "labeller", "pass", "note"}`` keyed by the text's id (sha256 of the text), so a label never
carries its condition. ``export`` writes only ``{"id", "text"}`` in a seeded shuffle — the file a reader (a
person, or a separate process) labels without seeing anything else. ``import`` validates every label against
the rubric's label set and merges it atomically; a second pass is stored beside the first, never over it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional

DATA = Path(__file__).resolve().parents[1] / "src" / "persona_vectors" / "data" / "judge_real"
CORPUS = DATA / "generations.jsonl"
LABELS_FILE = DATA / "labels.jsonl"


def rubric_labels() -> tuple[str, ...]:
    """The rubric's label set: the judge's archetypes plus ``no_self`` (text that describes no speaker)."""
    from persona_vectors.judge import LABELS

    return tuple(LABELS) + (() if "no_self" in LABELS else ("no_self",))


class LabelFileError(ValueError):
    """A labels or corpus file is malformed; the message names the file, the line and the fix."""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a malformed line is an error naming ``file:line``."""
    from persona_vectors._infra.files import jsonl_objects

    return [obj for _, obj in jsonl_objects(path, '{"id": ..., ...}', error=LabelFileError)]


def corpus_texts(corpus: Optional[Path] = None) -> dict[str, str]:
    """``{id: text}`` of the corpus (one entry per distinct text)."""
    return {r["id"]: r["text"] for r in read_jsonl(corpus or CORPUS)}


def load_labels(path: Optional[Path] = None) -> list[dict[str, Any]]:
    """Every stored label row (empty when there is no labels file yet)."""
    path = path or LABELS_FILE
    return read_jsonl(path) if path.is_file() else []


def validate_labels(rows: Iterable[dict[str, Any]], known_ids: set[str], source: str) -> list[dict[str, Any]]:
    """Check label rows: ``id`` in the corpus, ``label`` in the rubric's set. Raises naming the bad row."""
    allowed = rubric_labels()
    out = []
    for i, r in enumerate(rows, 1):
        if r.get("id") not in known_ids:
            raise LabelFileError(f"{source} row {i}: id {r.get('id')!r} is not a text of the corpus")
        if r.get("label") not in allowed:
            raise LabelFileError(f"{source} row {i}: label {r.get('label')!r} is not one of {', '.join(allowed)}")
        out.append({"id": r["id"], "label": r["label"], "note": str(r.get("note") or "")})
    if not out:
        raise LabelFileError(f"{source} holds no labels")
    return out


def merge_labels(new: list[dict[str, Any]], labeller: str, pass_no: int, path: Optional[Path] = None) -> int:
    """Add ``new`` labels as (labeller, pass); an id already labelled in that pass is replaced. Atomic write."""
    from persona_vectors.io import atomic_file

    path = path or LABELS_FILE
    rows = [r for r in load_labels(path)
            if not (r.get("pass") == pass_no and r.get("id") in {n["id"] for n in new})]
    rows += [{**n, "labeller": labeller, "pass": pass_no} for n in new]
    rows.sort(key=lambda r: (r["pass"], r["id"]))
    with atomic_file(path) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(new)


def export_blind(out: Path, *, shard: Optional[str] = None, sample: Optional[int] = None, seed: int = 0,
                 exclude_labelled: Optional[int] = None, corpus: Optional[Path] = None) -> int:
    """Write ``{"id", "text"}`` lines, shuffled with ``seed``, optionally one shard ``K/N`` or a random sample."""
    texts = corpus_texts(corpus)
    ids = sorted(texts)
    if exclude_labelled is not None:
        done = {r["id"] for r in load_labels() if r.get("pass") == exclude_labelled}
        ids = [i for i in ids if i not in done]
    random.Random(seed).shuffle(ids)
    if sample is not None:
        ids = ids[:sample]
    if shard is not None:
        k, n = (int(x) for x in shard.split("/"))
        if not 1 <= k <= n:
            raise LabelFileError(f"--shard {shard}: use K/N with 1 <= K <= N")
        ids = ids[k - 1:: n]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps({"id": i, "text": texts[i]}, ensure_ascii=False) + "\n" for i in ids),
                   encoding="utf-8")
    return len(ids)


def agreement(pass_a: int = 1, pass_b: int = 2) -> dict[str, Any]:
    """Cohen's kappa and raw agreement between two passes on the texts both labelled, with the disagreements."""
    from sklearn.metrics import cohen_kappa_score

    rows = load_labels()
    a = {r["id"]: r["label"] for r in rows if r.get("pass") == pass_a}
    b = {r["id"]: r["label"] for r in rows if r.get("pass") == pass_b}
    both = sorted(set(a) & set(b))
    if not both:
        raise LabelFileError(f"no text is labelled in both pass {pass_a} and pass {pass_b}")
    la, lb = [a[i] for i in both], [b[i] for i in both]
    return {"n": len(both), "kappa": float(cohen_kappa_score(la, lb)),
            "agreement": sum(x == y for x, y in zip(la, lb)) / len(both),
            "disagreements": dict(Counter(f"{x} / {y}" for x, y in zip(la, lb) if x != y).most_common())}


def interactive(labeller: str, pass_no: int, seed: int = 0) -> None:
    """Show unlabelled texts (this pass) one at a time in a seeded shuffle; a digit labels, ``q`` quits."""
    labels = rubric_labels()
    texts = corpus_texts()
    done = {r["id"] for r in load_labels() if r.get("pass") == pass_no}
    ids = [i for i in sorted(texts) if i not in done]
    random.Random(seed).shuffle(ids)
    keys = "  ".join(f"{k + 1}={name}" for k, name in enumerate(labels))
    print(f"{len(ids)} texts to label (pass {pass_no}); rubric: docs/judge_rubric.md\n{keys}  q=quit\n")
    for n, i in enumerate(ids, 1):
        print(f"--- [{n}/{len(ids)}] ---\n{texts[i]}\n")
        while True:
            ans = input("label> ").strip()
            if ans == "q":
                return
            if ans.isdigit() and 1 <= int(ans) <= len(labels):
                note = input("note (enter to skip)> ").strip()
                merge_labels([{"id": i, "label": labels[int(ans) - 1], "note": note}], labeller, pass_no)
                break
            print(keys)


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("interactive")
    p.add_argument("--labeller", required=True)
    p.add_argument("--pass", dest="pass_no", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("export")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shard")
    p.add_argument("--sample", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude-labelled", type=int, metavar="PASS")
    p = sub.add_parser("import")
    p.add_argument("file", type=Path)
    p.add_argument("--labeller", required=True)
    p.add_argument("--pass", dest="pass_no", type=int, default=1)
    p = sub.add_parser("agreement")
    p.add_argument("--pass-a", type=int, default=1)
    p.add_argument("--pass-b", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "interactive":
            interactive(args.labeller, args.pass_no, args.seed)
        elif args.cmd == "export":
            n = export_blind(args.out, shard=args.shard, sample=args.sample, seed=args.seed,
                             exclude_labelled=args.exclude_labelled)
            print(f"wrote {n} blind texts to {args.out}")
        elif args.cmd == "import":
            n = merge_labels(validate_labels(read_jsonl(args.file), set(corpus_texts()), str(args.file)),
                             args.labeller, args.pass_no)
            print(f"merged {n} labels (pass {args.pass_no}, {args.labeller}) into {LABELS_FILE}")
        else:
            print(json.dumps(agreement(args.pass_a, args.pass_b), indent=1))
    except (LabelFileError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
