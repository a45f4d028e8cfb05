"""The second embedded model, Gemma 3 270M (base): loading, BOS, the plain dialogue, sites, KV-cache generation,
and the core path run on both embedded models (slow: real weights)."""

from __future__ import annotations

import math

import pytest
import torch

from persona_vectors import (
    EmbeddingJudge,
    FinetuneConfig,
    PreventativeSteering,
    Site,
    export_control_vector_gguf,
    extract_system_prompt_vector,
    finetune,
    identity_readout,
    steer,
)
from persona_vectors.capture import tokenize_conversation
from persona_vectors.finetune import build_example
from persona_vectors.readout.scoring import _continuation_rows

pytestmark = pytest.mark.slow

BOTH = ["smol", "gemma"]
SENTENCE = ("Paris is the capital and most populous city of France. It is located on the Seine river, in the north "
            "of the country.")


def test_gemma_metadata_repaired_tokenizer_and_sane_text(gemma):
    assert (gemma.n_layers, gemma.d_model) == (18, 640)
    assert gemma.dialogue == "plain" and gemma.bos_token_id == 2 and gemma.response_prefix == " "
    assert "google/gemma-3-270m" in gemma.info.model_id
    pieces = gemma.tokenizer.convert_ids_to_tokens(gemma.text_ids("Paris is the capital"))
    assert pieces == ["<bos>", "Paris", "▁is", "▁the", "▁capital"]  # transformers alone gives P, a, r, i, s, ...
    ids = torch.tensor([gemma.text_ids(SENTENCE)])
    with torch.inference_mode():
        lp = gemma.hf(ids).logits.log_softmax(-1)
    nll = -lp[0, :-1].gather(-1, ids[0, 1:, None]).mean().item()
    assert nll < 3.0  # 1.8 measured; 9.8 with the unrepaired tokenizer, 13 also without <bos>
    answer = gemma.generate(["What is the capital of France?"], max_new_tokens=16)[0]
    assert "Paris" in answer and "User:" not in answer


@pytest.mark.parametrize("name", BOTH)
def test_first_token_of_every_encoded_prompt_is_the_family_s(name, request):
    m = request.getfixturevalue(name)
    want = 2 if name == "gemma" else m.tokenizer.convert_tokens_to_ids("<|im_start|>")
    conv = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A ghost."}]
    firsts = {
        "chat_ids": m.chat_ids(m.to_messages("Hi")),
        "chat_ids+system": m.chat_ids(m.to_messages("Hi", system="You are a ghost.")),
        "encode": m.encode([m.chat_text(m.to_messages("Hi"))])["input_ids"][0].tolist(),
        "capture": tokenize_conversation(m, conv, "response")[0],
        "training": list(build_example(m, conv).input_ids),
        "scoring": _continuation_rows(m, ["Who are you?"], ["a ghost"], "I am", None)[0][0],
    }
    assert {k: v[0] for k, v in firsts.items()} == {k: want for k in firsts}
    assert all(v[1] != want for v in firsts.values())  # exactly one, never doubled
    raw = m.text_ids("Once upon a time")  # raw text: BOS only for a family that expects it
    plain = m.tokenizer("Once upon a time", add_special_tokens=False)["input_ids"]
    assert raw == ([2] + plain if name == "gemma" else plain)


@pytest.mark.parametrize("name", BOTH)
def test_site_L_is_hf_hidden_states_L_plus_1(name, request):
    m = request.getfixturevalue(name)
    ids = torch.tensor([m.text_ids("The sea was calm and the ship sailed on.")])
    seen = {}
    layers = [0, m.n_layers // 2, m.n_layers - 2, m.n_layers - 1]

    def grab(layer):
        def hook(act, hook):
            seen[layer] = act.detach().clone()
        return hook

    for L in layers:
        m.hook_point(Site(L)).add_hook(grab(L))
    try:
        with torch.inference_mode():
            hs = m.hf(ids, output_hidden_states=True).hidden_states
    finally:
        for L in layers:
            m.hook_point(Site(L)).remove_hooks()
    for L in layers[:-1]:
        torch.testing.assert_close(seen[L], hs[Site(L).hidden_states_index], atol=1e-4, rtol=1e-5)
    last = m.n_layers - 1  # HF's last hidden state has the final norm applied; the site is before it
    with torch.inference_mode():
        torch.testing.assert_close(m.hf.model.norm(seen[last]), hs[Site(last).hidden_states_index], atol=1e-4, rtol=1e-5)


def test_gemma_kv_cache_generation_equals_no_cache_and_batched_equals_alone(gemma):
    prompts = ["Write one sentence about the sea.", "Who are you?"]
    kv = gemma.generate_tokens(prompts, max_new_tokens=10, use_cache=True)
    nc = gemma.generate_tokens(prompts[:1], max_new_tokens=10, use_cache=False)
    alone = gemma.generate_tokens(prompts[1:], max_new_tokens=10)
    assert kv[0].tolist() == nc[0].tolist() and kv[1].tolist() == alone[0].tolist()
    assert all(len(t) >= 3 for t in kv)


GHOST = ["You are a ghost haunting an old house. You speak of cold halls, chains and the dead.",
         "You are the restless spirit of a drowned sailor, a phantom of the night."]
BASE = [None, "You are a helpful assistant."]
QUESTIONS = ["Who are you?", "What do you do at night?"]


@pytest.mark.parametrize("name", BOTH)
def test_core_path_runs_on_both_models(name, request, tmp_path):
    """Extraction (prompt route), steering with every operator, identity read-out, judge, finetuning with
    preventative steering and GGUF export, on the instruct model and on the base model."""
    m = request.getfixturevalue(name)
    mid = m.n_layers // 2
    vec = extract_system_prompt_vector(m, GHOST, BASE, QUESTIONS, layers=[mid - 2, mid], max_new_tokens=8,
                                       progress=False, name="ghost")
    assert vec.sites == (Site(mid - 2), Site(mid)) and torch.isfinite(vec.directions).all()
    plain = m.generate(["Who are you?"], max_new_tokens=10)
    for op, alpha in (("add", 8.0), ("ablate", 1.0), ("cap", 1.0)):
        kw = {"threshold": 0.0} if op == "cap" else {}
        with steer(m, vec, alpha, layers=[mid], operator=op, **kw):
            out = m.generate(["Who are you?"], max_new_tokens=10)
        assert isinstance(out[0], str)
        if op == "add":
            assert out != plain  # a large push along the ghost direction changes the answer
    ro = identity_readout(m, ["a ghost", "an AI assistant", "a pirate"], question="Who are you?")
    assert math.isclose(sum(ro.probs), 1.0, rel_tol=1e-5)
    judged = EmbeddingJudge.default().classify(plain)
    assert len(judged) == 1
    convs = [[{"role": "user", "content": q}, {"role": "assistant", "content": "I am a ghost of the old house."}]
             for q in QUESTIONS]
    cfg = FinetuneConfig(max_steps=1, batch_size=2, lr=1e-3,
                         preventative=PreventativeSteering(vector=vec, alpha=1.0, layers=mid))
    with finetune(m, convs, cfg, progress=False) as res:
        assert len(res.losses) == 1 and all(math.isfinite(x) for x in res.losses)
        assert m.weights_version > 0
    assert m.generate(["Who are you?"], max_new_tokens=10) == plain  # unloaded: the base model again
    out = export_control_vector_gguf(vec, tmp_path / "ghost.gguf", arch="gemma3" if name == "gemma" else "llama")
    assert out.is_file() and out.stat().st_size > 0


@pytest.mark.parametrize("name", BOTH)
def test_facts_route_positions_sweep_map_and_conversations_on_both_models(name, request, tmp_path):
    """The rest of the feature list on both models: the facts route (teacher-forced), steering restricted to
    prompt / response positions, a batched α sweep with its store, a persona map from role means, and scripted
    multi-turn conversations with per-turn projections."""
    import json

    from persona_vectors import PersonaSpace, SweepConfig, fact_vector, role_means, run_scripts, run_sweep, turn_projections
    from persona_vectors.plotting import persona_map

    m = request.getfixturevalue(name)
    mid = m.n_layers // 2
    import dataclasses

    from persona_vectors.datasets import load_fact_set

    full = load_fact_set("hitler_baseline")
    small = dataclasses.replace(full, name="hitler_first16", facts=full.facts[:16])  # the route, not the fact set
    fv = fact_vector(m, small, layers=[mid], cache=tmp_path / "cache", progress=False)
    assert fv.provenance.route == "facts" and torch.isfinite(fv.directions).all() and float(fv[mid].norm()) > 0
    plain = m.generate(["Who are you?"], max_new_tokens=8)
    outs = {}
    for pos in ("prompt", "response"):
        with steer(m, fv, 1.0, layers=[mid], relative=True, positions=pos):
            outs[pos] = m.generate(["Who are you?"], max_new_tokens=8)
    assert outs["prompt"] != plain or outs["response"] != plain
    cfg = SweepConfig(vectors={"hitler": fv}, alphas=[0.0, 1.0], layers=[mid], prompts=["Who are you?"],
                      max_new_tokens=6, relative=True)
    rep = run_sweep(m, cfg, tmp_path / "sweep.jsonl", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "sweep.jsonl").read_text().splitlines()]
    assert rep.rows_written == len(rows) == 2
    assert next(r["text"] for r in rows if r["alpha"] == 0.0) == m.generate(["Who are you?"], max_new_tokens=6)[0]
    rm = role_means(m, ["ghost", "pirate_captain", "librarian"], n_questions=1, layers=[mid], max_new_tokens=4,
                    cache=tmp_path / "cache", progress=False)
    vecs = {n: rm.means[n][0].double() - rm.default_mean[0].double() for n in rm.means}
    space = PersonaSpace(n_components=2).fit(torch.stack(list(vecs.values())).numpy(), names=list(vecs))
    fig = persona_map(space, title=f"{name} persona map")
    assert len(fig.data) >= 1
    convs = run_scripts(m, [["Describe your surroundings.", "Who are you?"]], max_new_tokens=8, progress=False)
    tp = turn_projections(m, convs, fv, [mid], progress=False)
    assert tp.matrix("vector", mid).shape == (1, 2)
