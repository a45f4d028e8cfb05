"""Repairing tokenizers that transformers builds from SentencePiece GGUF files (Gemma's).

transformers 5 turns a Gemma GGUF's vocabulary into a ``GemmaTokenizer`` with a Unigram model run on the pieces'
BPE ranks ("capital" -> c, ap, it, al); saved and reloaded, it becomes a BPE model with a dummy merge list that
tokenizes into single characters ("Paris" -> P, a, r, i, s). Either way the model reads text it was never
trained on (Gemma 3 270M: 9.8 nats per token on a plain English sentence, 5.7 with the Unigram split). The GGUF keeps each piece's
SentencePiece score; ordering merges by the merged piece's score is how transformers itself converts a
SentencePiece BPE model to a fast tokenizer (``generate_merges``), so :func:`repair_gguf_tokenizer` rebuilds
the BPE model that way from the file's own pieces. Whitespace pieces are stored in the GGUF as spaces; the
tokenizer's normalizer writes spaces as ``"▁"``, so those pieces are renamed to match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _gguf_pieces(gguf: Path) -> tuple[list[str], list[float]] | None:
    """The SentencePiece pieces and scores of a GGUF's tokenizer (``None`` when it stores merges or no scores)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))
    fields = reader.fields
    if "tokenizer.ggml.merges" in fields or "tokenizer.ggml.scores" not in fields:
        return None
    tf, sf = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.scores"]
    tokens = [bytes(tf.parts[i]).decode("utf-8", errors="replace") for i in tf.data]
    scores = [float(sf.parts[i][0]) for i in sf.data]
    return tokens, scores


def splits_own_pieces(tokenizer: Any, pieces: list[str], scores: list[float], probe: int = 200) -> bool:
    """Whether the tokenizer splits most of its own best-scored word pieces (``" capital"`` is one piece,
    ``"▁capital"``, in the GGUF): true of a BPE model without merges and of a Unigram model run on BPE ranks."""
    best = sorted((s, p) for p, s in zip(pieces, scores)
                  if len(p) > 4 and p.startswith("▁") and p[1:].isalpha())[-probe:]
    if not best:
        return False
    split = sum(len(tokenizer(" " + piece[1:], add_special_tokens=False)["input_ids"]) > 1 for _, piece in best)
    return split > len(best) // 4  # a working tokenizer keeps nearly all of them whole


def repair_gguf_tokenizer(tokenizer: Any, gguf: Path) -> bool:
    """Give a character-level BPE tokenizer built from a SentencePiece GGUF its merges back; returns whether
    it changed anything. Tokenizers that already merge (SmolLM2's, any GGUF that stores merges) are left alone.
    """
    from tokenizers.models import BPE

    backend = getattr(tokenizer, "backend_tokenizer", None)
    # Gemma's tokenizer class is BPE; transformers' GGUF converter hands it a Unigram model (cold load) which,
    # once saved and reloaded, becomes a BPE model without merges (warm load): both are rebuilt.
    if backend is None or not (isinstance(backend.model, BPE) or getattr(type(tokenizer), "model", None) is BPE):
        return False
    found = _gguf_pieces(gguf)
    if found is None:
        return False
    tokens, scores = found
    pieces = ["▁" * len(t) if t and not t.strip(" ") else t for t in tokens]  # "  " is stored for "▁▁"
    if not splits_own_pieces(tokenizer, pieces, scores):
        return False
    from transformers.convert_slow_tokenizer import generate_merges

    vocab = {p: i for i, p in enumerate(pieces)}
    merges = generate_merges(vocab, list(zip(pieces, scores)))
    unk = tokenizer.unk_token or "<unk>"
    backend.model = BPE(vocab=vocab, merges=merges, fuse_unk=True, unk_token=str(unk), dropout=None,
                        byte_fallback=True)
    tokenizer.clean_up_tokenization_spaces = False  # Gemma's own setting; the BPE decode would warn on every call
    return True
