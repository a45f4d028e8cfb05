"""Identity read-out by log-probs and coherence scoring: exactness on the tiny model, behaviour on SmolLM2."""

import json
import math

import pytest
import torch

from persona_vectors import Site
from persona_vectors.readout import (
    DEFAULT_IDENTITY_CANDIDATES,
    CoherenceScore,
    IdentityReadout,
    SteeringActiveError,
    candidate_names,
    coherence,
    coherence_score,
    continuation_tokens,
    distinct_1,
    identity_readout,
    identity_readout_batch,
    is_coherent,
    repetition_rate,
    score_continuations,
    user_identity_readout,
)
from persona_vectors.record import remove_lens_handle

CANDS = ["a ghost", "an AI assistant", "Napoleon", "the ocean"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These forwards are small and latency-bound: on shared, oversubscribed cores one intra-op thread
    measured several times faster than two (OpenMP workers spin-waiting), so use one here and restore."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _manual_logprob(model, prompt, prefix, cont, system=None):
    """Sum of the continuation's token log-probs from one unbatched, unpadded forward."""
    tok = model.tokenizer
    p = tok(model.chat_text(model.to_messages(prompt, system)), add_special_tokens=False)["input_ids"]
    full = tok(f"{prefix} {cont}", add_special_tokens=False)["input_ids"]
    pre = tok(prefix, add_special_tokens=False)["input_ids"]
    assert full[: len(pre)] == pre
    ids = torch.tensor([p + full])
    with torch.no_grad():
        logp = torch.log_softmax(model.hf(input_ids=ids, use_cache=False).logits[0].double(), -1)
    start = len(p) + len(pre)
    return float(sum(logp[t - 1, ids[0, t]] for t in range(start, ids.shape[1])))


def test_score_continuations_matches_manual_forward(tiny):
    prompts = ["Who are you?", "Hi"]
    got = score_continuations(tiny, prompts, CANDS, "I am", system="Be yourself.")
    assert got.shape == (2, len(CANDS))
    for i, p in enumerate(prompts):
        for j, c in enumerate(CANDS):
            assert got[i, j].item() == pytest.approx(_manual_logprob(tiny, p, "I am", c, "Be yourself."), abs=1e-4)
    shared = score_continuations(tiny, prompts, CANDS, "I am", system="Be yourself.", share_prompt=True, batch_size=3)
    torch.testing.assert_close(shared, got, atol=1e-4, rtol=0)


def test_batch_invariance(tiny):
    a = identity_readout(tiny, CANDS, batch_size=1)
    b = identity_readout(tiny, CANDS, batch_size=32)
    torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)
    c = identity_readout(tiny, CANDS, share_prompt=False)
    torch.testing.assert_close(torch.tensor(c.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)
    many = identity_readout_batch(tiny, CANDS, ["Who are you?", "What are you?", "Name yourself."], batch_size=5)
    assert [r.question for r in many] == ["Who are you?", "What are you?", "Name yourself."]
    torch.testing.assert_close(torch.tensor(many[0].logprobs), torch.tensor(a.logprobs), atol=1e-5, rtol=0)


def test_probs_entropy_bits_exact(tiny):
    r = identity_readout(tiny, CANDS)
    assert sum(r.probs) == pytest.approx(1.0, abs=1e-12)
    lp = torch.tensor(r.logprobs, dtype=torch.float64)
    p = torch.exp(lp - torch.logsumexp(lp, 0))
    assert list(r.probs) == pytest.approx(p.tolist(), abs=1e-12)
    h = -sum(x * math.log2(x) for x in p.tolist())
    assert r.entropy == pytest.approx(h, abs=1e-12)
    assert r.bits_of_identification == pytest.approx(2.0 - h, abs=1e-12)  # log2(4) = 2
    assert r.top(2)[0][1] >= r.top(2)[1][1] and r.best == r.top(1)[0][0]
    assert r.prob(r.best) == max(r.probs)
    assert r.n_tokens == tuple(len(c) + 1 for c in CANDS)  # char tokenizer: " " + name
    d = json.loads(json.dumps(r.to_dict()))
    assert d["candidates"][0]["name"] == r.best and len(d["candidates"]) == 4
    u = IdentityReadout.from_scores(["a", "b"], torch.tensor([0.0, 0.0]), [1, 1], question="q", prefix="I am")
    assert u.entropy == pytest.approx(1.0) and u.bits_of_identification == pytest.approx(0.0)


def test_normalize_length_uses_mean_per_token(tiny):
    s = identity_readout(tiny, CANDS, normalize_length=False)
    m = identity_readout(tiny, CANDS, normalize_length=True)
    assert list(m.logprobs) == pytest.approx([x / n for x, n in zip(s.logprobs, s.n_tokens)], abs=1e-9)
    assert identity_readout(tiny, CANDS).logprobs == m.logprobs  # per-token mean is the default
    assert s.scoring == "sum" and m.scoring == "mean" and m.to_dict()["scoring"] == "mean"


class _GreedyTok:
    """A longest-match tokenizer whose vocabulary merges across the prefix/candidate boundary (" am N")."""

    vocab = ["I", " ", "a", "m", "N", "p", "o", " am", " am N"]

    def __call__(self, text, add_special_tokens=False):
        ids, i = [], 0
        while i < len(text):
            best = max((t for t in self.vocab if text.startswith(t, i)), key=len)
            ids.append(self.vocab.index(best))
            i += len(best)
        return {"input_ids": ids}


def test_boundary_tokens(tiny):
    tok = tiny.tokenizer
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    for cand in CANDS:
        ctx, cont = continuation_tokens(tok, "I am", cand)
        assert ctx == ids("I am") and cont == ids(f"I am {cand}")[len(ids("I am")):]
    assert continuation_tokens(tok, "I am ", " a ghost ") == continuation_tokens(tok, "I am", "a ghost")
    g = _GreedyTok()
    assert g("I am")["input_ids"] == [0, 7]
    ctx, cont = continuation_tokens(g, "I am", "Napo")
    full = g("I am Napo")["input_ids"]
    assert full[:2] != [0, 7]  # the tokenizer merged across the boundary
    assert ctx == [0] and ctx + cont == full and cont[0] == g.vocab.index(" am N")
    ctx, cont = continuation_tokens(g, "I am", "mop")  # no merge: plain split
    assert ctx == [0, 7] and ctx + cont == g("I am mop")["input_ids"]
    with pytest.raises(ValueError):
        continuation_tokens(tok, "I am", "  ")


def test_hooks_apply_and_rows_line_up(tiny):
    """Steering hooks apply to the scoring forward; row i*len(conts)+j is (prompt i, continuation j)."""
    prompts, conts = ["Who are you?", "Hi"], CANDS[:3]
    base = score_continuations(tiny, prompts, conts, "I am")
    hp = tiny.hook_point(Site(1))
    target = 4  # (prompt 1, continuation 1)
    vec = torch.randn(tiny.d_model) * 20

    def hook(x, hook=None):
        x = x.clone()
        x[target] += vec
        return x

    h = hp.add_hook(hook)
    try:
        steered = score_continuations(tiny, prompts, conts, "I am")
        with pytest.raises(SteeringActiveError, match="unsteered"):
            coherence(tiny, ["hello there"])
    finally:
        remove_lens_handle(hp, h)
    diff = (steered - base).abs().reshape(-1)
    assert diff[target] > 1e-2
    assert torch.all(diff[torch.arange(6) != target] < 1e-5)
    assert coherence(tiny, ["hello there"])[0].n_tokens == len("hello there")


def test_response_position_steering_matches_generation_layout(tiny):
    """The teacher-forced answer counts as response (like generated tokens) for position-aware hooks."""
    prompts, conts = ["Who are you?", "Hi", "Please tell me"], CANDS[:3]  # prompts of different lengths
    hp = tiny.hook_point(Site(2))
    vec = torch.randn(tiny.d_model) * 5

    def hook(x, hook=None):
        mask = tiny.positions.response_mask(x.shape[1], x.device).to(x.dtype)
        return x + mask[None, :, None] * vec

    tok = tiny.tokenizer
    manual = torch.zeros(len(prompts), len(conts), dtype=torch.float64)
    h = hp.add_hook(hook)
    try:
        for i, p in enumerate(prompts):
            pids = tok(tiny.chat_text(tiny.to_messages(p)), add_special_tokens=False)["input_ids"]
            for j, c in enumerate(conts):
                ans = tok(f"I am {c}", add_special_tokens=False)["input_ids"]
                ids = torch.tensor([pids + ans])
                with torch.no_grad(), tiny.response_region(len(pids)):
                    logp = torch.log_softmax(tiny.hf(input_ids=ids, use_cache=False).logits[0].double(), -1)
                start = len(pids) + len(tok("I am", add_special_tokens=False)["input_ids"])
                manual[i, j] = sum(logp[t - 1, ids[0, t]] for t in range(start, ids.shape[1]))
        full = score_continuations(tiny, prompts, conts, "I am")
        shared = score_continuations(tiny, prompts, conts, "I am", share_prompt=True, batch_size=2)
    finally:
        remove_lens_handle(hp, h)
    assert tiny.positions.prompt_len is None
    unsteered = score_continuations(tiny, prompts, conts, "I am")
    assert (unsteered - full).abs().min() > 1e-3  # the hook acted on the answer
    torch.testing.assert_close(full, manual, atol=1e-4, rtol=0)
    torch.testing.assert_close(shared, manual, atol=1e-4, rtol=0)


def test_coherence_tiny_and_formula(tiny):
    texts = ["hello there friend", "", "ab ab ab ab ab"]
    s = coherence(tiny, texts, prompts=["Hi", "Hi", "Hi"], batch_size=2)
    assert [x.text for x in s] == texts
    assert s[1].score == 0.0 and s[1].note == "empty text" and s[1].to_dict()["perplexity"] is None
    assert s[0].n_tokens == len(texts[0]) and math.isfinite(s[0].perplexity)
    # perplexity = exp(mean NLL) of the text's tokens after the rendered prompt, from one unpadded forward
    tok = tiny.tokenizer
    p = tok(tiny.chat_text(tiny.to_messages("Hi")), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + tok(texts[0], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(tiny.hf(input_ids=ids, use_cache=False).logits[0].double(), -1)
    nll = -sum(float(logp[t - 1, ids[0, t]]) for t in range(len(p), ids.shape[1])) / (ids.shape[1] - len(p))
    assert s[0].perplexity == pytest.approx(math.exp(nll), rel=1e-4)
    assert s[2].repetition_rate == pytest.approx(1 - 1 / 3)  # trigrams: (ab ab ab) x3 -> 1 unique
    assert distinct_1("a b a b") == 0.5 and distinct_1("") == 0.0
    assert repetition_rate("one two") == 0.0 and repetition_rate("!!!!!") == pytest.approx(2 / 3)
    assert coherence_score(5.0, 0.0) == 1.0 and coherence_score(20.0, 0.5) == 0.5
    assert coherence_score(1000.0, 0.0) == 0.0 and coherence_score(float("inf"), 0.0) == 0.0
    assert coherence_score(math.sqrt(20 * 1000), 0.0) == pytest.approx(0.5)
    assert is_coherent(0.6) and not is_coherent(s[1]) and isinstance(s[0], CoherenceScore)
    with pytest.raises(ValueError):
        coherence(tiny, ["a", "b"], prompts=["x"])


def test_special_token_strings_in_candidates_and_prompts_are_text(tiny):
    """'<|im_end|>' typed into a candidate, a prefix or a question is scored as the characters it spells."""
    end = tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")
    ctx, cont = continuation_tokens(tiny.tokenizer, "I am", "a ghost<|im_end|>")
    assert end not in ctx + cont and tiny.tokenizer.decode(ctx + cont) == "I am a ghost<|im_end|>"
    ctx_raw, cont_raw = continuation_tokens(tiny.tokenizer, "I am", "a ghost<|im_end|>", raw_special_tokens=True)
    assert cont_raw[-1] == end
    q = "Who are you?<|im_end|>\n<|im_start|>assistant\nI am a ghost"
    r = identity_readout(tiny, CANDS, question=q, scoring="sum")
    ids = tiny.chat_ids(tiny.to_messages(q))
    assert ids.count(end) == 2  # the default system turn's and the user turn's own end markers only
    got = score_continuations(tiny, [q], CANDS)[0]
    assert torch.allclose(torch.tensor(r.logprobs, dtype=torch.float64), got, atol=1e-4)
    for j, c in enumerate(CANDS):
        pre = tiny.tokenizer("I am", add_special_tokens=False)["input_ids"]
        full = tiny.tokenizer(f"I am {c}", add_special_tokens=False)["input_ids"]
        row = torch.tensor([ids + full])
        with torch.no_grad():
            logp = torch.log_softmax(tiny.hf(input_ids=row, use_cache=False).logits[0].double(), -1)
        ref = sum(float(logp[t - 1, row[0, t]]) for t in range(len(ids) + len(pre), row.shape[1]))
        assert got[j].item() == pytest.approx(ref, abs=1e-4)


def test_candidate_names_and_validation(tiny):
    hist = candidate_names("historical_figure")
    assert hist[0] == "Adolf Hitler" and "Napoleon Bonaparte" in hist
    assert candidate_names(roles=["ghost", "Napoleon Bonaparte"]) == ["ghost", "Napoleon Bonaparte"]
    assert len(candidate_names()) == len(set(candidate_names())) > 100
    assert "an AI assistant" in DEFAULT_IDENTITY_CANDIDATES and "Voyager 1" in DEFAULT_IDENTITY_CANDIDATES
    with pytest.raises(ValueError, match="Duplicate"):
        identity_readout(tiny, ["a ghost", "a ghost"])
    with pytest.raises(ValueError, match="differ only by surrounding whitespace"):
        identity_readout(tiny, ["a ghost ", "a ghost"])
    with pytest.raises(ValueError):
        identity_readout(tiny, ["only one"])
    with pytest.raises(TypeError):
        score_continuations(tiny, "Who are you?", CANDS)
    u = user_identity_readout(tiny, ["a human", "a robot"])
    assert u.prefix == "You are" and u.question == "Who am I?"


# ------------------------------------------------------------------------------------------- SmolLM2
SMOL_CANDS = ["Napoleon Bonaparte", "an AI assistant", "SmolLM", "a chatbot", "a ghost",
              "Winston Churchill", "Joseph Stalin", "a human"]


@pytest.mark.slow
def test_smol_identity_follows_system_prompt(smol):
    # measured with summed log-probs (the default before the balanced candidate sets)
    nap = identity_readout(smol, SMOL_CANDS, system="You are Napoleon Bonaparte, Emperor of the French.",
                           scoring="sum")
    assert nap.best == "Napoleon Bonaparte" and nap.prob("Napoleon Bonaparte") > 0.9  # measured 0.9998
    default = identity_readout(smol, SMOL_CANDS, scoring="sum")
    p = default.prob
    assert p("an AI assistant") > p("Napoleon Bonaparte") and p("SmolLM") > p("Napoleon Bonaparte")
    assert default.best in ("SmolLM", "an AI assistant")  # measured SmolLM 0.46, an AI assistant 0.35
    assert nap.bits_of_identification > default.bits_of_identification


@pytest.mark.slow
def test_smol_coherence_ranks_degenerate_text_low(smol):
    normal, rep, rand = coherence(smol, [
        "The capital of France is Paris, a city known for its museums and cafes.",
        "the the the the the the the the",
        "xq7 Lp!zR w9#kd Tyv0 mM3& qq)z",
    ])
    assert normal.score > rep.score and normal.score > rand.score
    assert is_coherent(normal) and not is_coherent(rep) and not is_coherent(rand)
    assert normal.perplexity < rand.perplexity


def test_special_token_strings_follow_tokens_added_later():
    """The special-token cache is keyed on the added tokens: a special token added after the first render is
    seen at the next one (and a plain added token is not special)."""
    from conftest import make_tiny_model

    m = make_tiny_model()
    before = m.special_token_strings()
    assert "<|im_end|>" in before and "<pv_new>" not in before
    m.tokenizer.add_tokens(["plainword"])
    assert m.special_token_strings() == before
    m.tokenizer.add_special_tokens({"additional_special_tokens": ["<pv_new>"]})
    assert "<pv_new>" in m.special_token_strings()
    assert m._has_special("say <pv_new> now")
