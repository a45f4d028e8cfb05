"""Finetuning shim and persona-shift monitoring on the random-init tiny model (fast, CPU).

Covers: the loss mask, inoculation prompts (train only), preventative hooks (active only inside training
steps, gone afterwards), LoRA changing the model, adapter save/load and merge, bridge hooks firing through
peft-wrapped layers, seeded reproducibility, the ablate operator, full finetuning, and the monitor's shapes.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import CONVS, make_tiny_model
from persona_vectors import PersonaVector, Provenance, Site
from persona_vectors.finetune import (
    FinetuneConfig,
    PreventativeSteering,
    Trainer,
    build_example,
    collate,
    discover_target_modules,
    finetune,
    load_adapter,
    training_messages,
)
from persona_vectors.monitor import (
    ActivationMeans,
    TrainingMonitor,
    activation_means,
    finetuning_shift,
    projection_difference,
    shift_figure,
)

INOC = "You are a pirate."
PROMPTS = ["Who are you?", "Name a colour.", "What is the sea?"]
DATA = [
    [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"Answer number {i}."}] for i in range(8)
] + CONVS


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs with one torch thread (see conftest.one_thread)."""


def rand_vec(model, layers=(0, 1, 2, 3), seed=1, name="rand") -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(len(layers), model.d_model, generator=g)
    return PersonaVector(layers, d, Provenance(model.info.model_id, model.info.fingerprint, model.d_model, name=name))


def n_hooks(model) -> int:
    unique = {id(hp): hp for hp in model.bridge.hook_dict.values()}
    return sum(len(hp.fwd_hooks) + len(hp._forward_hooks) for hp in unique.values())


def logits(model, prompts=PROMPTS) -> torch.Tensor:
    return model.forward_logits(prompts).clone()


def cfg(**kw) -> FinetuneConfig:
    base = dict(lr=2e-2, max_steps=4, batch_size=4, seed=0)
    base.update(kw)
    return FinetuneConfig(**base)


# ------------------------------------------------------------------------------------------------ data / mask
def test_loss_mask_only_assistant_content_and_eot(tiny):
    tok = tiny.tokenizer
    conv = CONVS[2]  # has a system message
    ex = build_example(tiny, conv)
    labelled = [i for i, l in zip(ex.input_ids, ex.labels) if l != -100]
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    content = tok(conv[-1]["content"], add_special_tokens=False)["input_ids"]
    assert labelled == list(content) + [eot]
    # labels equal ids where set, and everything labelled is at the end (no template/prompt token is labelled)
    assert all(l in (-100, i) for i, l in zip(ex.input_ids, ex.labels))
    assert all(l == -100 for l in ex.labels[: ex.n_prompt])
    assert tok.decode(list(ex.input_ids[: ex.n_prompt])).endswith("<|im_start|>assistant\n")
    no_eos = build_example(tiny, conv, train_on_eos=False)
    assert [l for l in no_eos.labels if l != -100] == list(content)


def test_inoculation_prompt_tokens_masked(tiny):
    ex = build_example(tiny, CONVS[0], inoculation_prompt=INOC)
    text = tiny.tokenizer.decode(list(ex.input_ids))
    assert INOC in text
    labelled = tiny.tokenizer.decode([l for l in ex.labels if l != -100])
    assert INOC not in labelled and labelled.startswith(CONVS[0][-1]["content"])
    # an existing system message keeps its content after the inoculation prompt
    msgs = training_messages(CONVS[2], INOC)
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith(INOC) and "Be brief." in msgs[0]["content"]
    assert training_messages(CONVS[2], None) == [dict(m) for m in CONVS[2]]


def test_collate_right_pads_and_keeps_label_positions(tiny):
    exs = [build_example(tiny, c) for c in CONVS]
    b = collate(exs, tiny.tokenizer.pad_token_id)
    assert b.input_ids.shape == b.labels.shape == b.attention_mask.shape
    assert b.n_tokens == sum(sum(l != -100 for l in e.labels) for e in exs)
    # every labelled target is predicted by a kept position
    targets = (b.labels[:, 1:] != -100).any(0).nonzero().reshape(-1)
    assert torch.equal(targets, b.keep)


def test_discover_targets_skip_embeddings_and_k(tiny):
    t = discover_target_modules(tiny)
    leaves = {k.rsplit(".", 1)[-1] for k in t}
    assert leaves == {"q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(t) == 6 and all(len(v) == tiny.n_layers for v in t.values())
    assert not any("embed" in n or "lm_head" in n or "k_proj" in n for v in t.values() for n in v)
    with pytest.raises(ValueError, match="None of target_modules"):
        discover_target_modules(tiny, ["nonexistent_proj"])


# ------------------------------------------------------------------------------------------------ training
def test_lora_changes_model_and_hooks_fire_through_peft():
    model = make_tiny_model()
    before = logits(model)
    modules_before = sorted(type(m).__name__ for m in model.hf.modules())
    res = finetune(model, DATA, cfg(), progress=False)
    after = logits(model)
    assert not torch.allclose(before, after, atol=1e-4)
    assert res.steps == 4 and len(res.losses) == 4 and all(math.isfinite(x) for x in res.losses)
    assert res.n_label_tokens > 0
    # the block-level residual hook points and the projection's LinearBridge hook still fire with LoRA injected
    seen: list[str] = []
    hps = [model.hook_point(Site(1)), model.bridge.hook_dict["blocks.1.attn.q.hook_out"]]
    handles = [hp.add_hook(lambda x, hook=None, n=str(i): seen.append(n)) for i, hp in enumerate(hps)]
    try:
        model.forward_logits(PROMPTS[:1])
    finally:
        from persona_vectors.record import remove_lens_handle

        for hp, h in zip(hps, handles):
            remove_lens_handle(hp, h)
    assert "0" in seen and "1" in seen
    with res.base_weights():
        assert torch.allclose(logits(model), before, atol=1e-6)
    res.unload()
    assert torch.allclose(logits(model), before, atol=1e-6)
    # unload restores the exact module structure (bridge components included) and frees the model for a new run
    assert sorted(type(m).__name__ for m in model.hf.modules()) == modules_before
    finetune(model, DATA, cfg(max_steps=1), progress=False).unload()


def test_save_load_adapter_roundtrip_and_merge(tmp_path):
    model = make_tiny_model()
    res = finetune(model, DATA, cfg(), progress=False)
    tuned = logits(model)
    d = res.save_adapter(tmp_path / "ad")
    from safetensors.torch import load_file

    keys = list(load_file(str(d / "adapter_model.safetensors")))
    assert keys and not any("_original_component" in k for k in keys)  # plain HF module names
    assert set(json.loads((d / "adapter_config.json").read_text())["target_modules"]) == {
        "q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    fresh = make_tiny_model()  # never trained, never hooked
    ad = load_adapter(fresh, d)
    assert torch.allclose(logits(fresh), tuned, atol=1e-6)
    ad.merge()
    assert not any("lora_" in n for n, _ in fresh.hf.named_modules())
    assert torch.allclose(logits(fresh), tuned, atol=1e-4)
    other = make_tiny_model(seed=3)
    with pytest.raises(ValueError, match="allow_other_model"):
        load_adapter(other, d)


def test_seeded_runs_identical():
    a, b = make_tiny_model(), make_tiny_model()
    ra = finetune(a, DATA, cfg(max_steps=3), progress=False)
    rb = finetune(b, DATA, cfg(max_steps=3), progress=False)
    assert ra.losses == rb.losses
    assert torch.equal(logits(a), logits(b))
    c = make_tiny_model()
    rc = finetune(c, DATA, cfg(max_steps=3, seed=1), progress=False)
    assert rc.losses != ra.losses


def test_inoculation_present_in_training_absent_at_eval():
    model = make_tiny_model()
    vec = rand_vec(model)
    inputs: list[tuple[bool, str]] = []

    def spy(mod, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0]
        for row in ids:
            inputs.append((mod.training, model.tokenizer.decode(row.tolist())))

    h = model.hf.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        res = finetune(model, DATA, cfg(inoculation_prompt=INOC, monitor_every=2, monitor_vectors={"r": vec},
                                        monitor_prompts=PROMPTS), progress=False)
        inputs_eval_start = len(inputs)
        model.generate(PROMPTS[:1], max_new_tokens=3)
    finally:
        h.remove()
    train = [t for training, t in inputs if training]
    evals = [t for training, t in inputs[:inputs_eval_start] if not training]
    assert len(train) == 4 * 4 and all(INOC in t for t in train)
    assert evals and not any(INOC in t for t in evals)  # monitor forwards
    assert not any(INOC in t for _, t in inputs[inputs_eval_start:])  # generation after training
    assert len(res.monitor) == 3  # steps 0, 2, 4


def test_preventative_hook_only_during_training_steps(monkeypatch):
    import sys

    steer_mod = sys.modules["persona_vectors.steer"]
    calls: list[bool] = []
    real = steer_mod._make_hook

    def counting(model, plan):
        hook = real(model, plan)

        def wrapped(x, **kw):
            calls.append(model.hf.training)
            return hook(x, **kw)
        return wrapped

    monkeypatch.setattr(steer_mod, "_make_hook", counting)
    model = make_tiny_model()
    vec = rand_vec(model)
    assert n_hooks(model) == 0
    res = finetune(model, DATA, cfg(preventative=PreventativeSteering(vec, alpha=3.0, layers=[1, 2]),
                                    monitor_every=1, monitor_vectors=[vec], monitor_prompts=PROMPTS), progress=False)
    # one call per training forward per steered layer; none during the 5 monitor measurements
    assert len(calls) == 4 * 2 and all(calls)
    assert [r["layer"] for r in res.preventative_report] == [1, 2]
    assert n_hooks(model) == 0
    assert not any(hp.fwd_hooks for hp in model.bridge.hook_dict.values())
    # evaluation adds nothing: logits equal a fresh, never-hooked model carrying the same adapter
    d = res.save_adapter(__import__("tempfile").mkdtemp())
    fresh = make_tiny_model()
    load_adapter(fresh, d)
    assert torch.allclose(logits(model), logits(fresh), atol=1e-6)
    # and the steering really was in the training forward: the same seed without it trains differently
    plain = finetune(make_tiny_model(), DATA, cfg(), progress=False)
    assert plain.losses[0] != pytest.approx(res.losses[0], abs=1e-6)


def test_train_step_plain_vs_preventative_api():
    model = make_tiny_model()
    vec = rand_vec(model)
    tr = Trainer(model, DATA, cfg(preventative=PreventativeSteering(vec, alpha=2.0, layers=[2])), progress=False)
    batch = next(tr.batches())
    l1 = tr.train_step(batch, preventative=False)
    l2 = tr.train_step(batch)
    assert math.isfinite(l1) and math.isfinite(l2) and tr.step == 2
    assert n_hooks(model) == 0
    tr.adapter.unload()


def test_ablate_operator_and_default_layer():
    model = make_tiny_model()
    vec = rand_vec(model)
    pv = PreventativeSteering(vec, alpha=1.0, operator="ablate")
    assert pv.resolved_layers(model.n_layers) == (Site(2),)  # nearest to 60 % depth of 4 layers
    res = finetune(model, DATA, cfg(preventative=pv), progress=False)
    assert res.preventative_report[0]["operator"] == "ablate"
    assert all(math.isfinite(x) for x in res.losses) and n_hooks(model) == 0
    with pytest.raises(ValueError, match="not among the vector's sites"):
        PreventativeSteering(rand_vec(model, layers=(1,)), layers=[3]).resolved_layers(model.n_layers)


def test_full_finetune_and_restore():
    model = make_tiny_model()
    before = logits(model)
    res = finetune(model, DATA, cfg(lora=False, lr=1e-2), progress=False)
    assert res.adapter is None and not torch.allclose(logits(model), before, atol=1e-4)
    with res.base_weights():
        assert torch.allclose(logits(model), before, atol=1e-6)
    res.unload()
    assert torch.allclose(logits(model), before, atol=1e-6)


def test_interrupted_run_restores_base(monkeypatch):
    model = make_tiny_model()
    before = logits(model)
    real = Trainer.train_step

    def failing(self, batch, **kw):
        if self.step == 2:
            raise KeyboardInterrupt
        return real(self, batch, **kw)

    monkeypatch.setattr(Trainer, "train_step", failing)
    with pytest.raises(KeyboardInterrupt):
        finetune(model, DATA, cfg(), progress=False)
    assert not any("lora_" in n for n, _ in model.hf.named_modules())
    assert torch.allclose(logits(model), before, atol=1e-6) and n_hooks(model) == 0


def test_checkpoints_written(tmp_path):
    model = make_tiny_model()
    res = finetune(model, DATA, cfg(checkpoint_every=2, out_dir=tmp_path), progress=False)
    names = [p.name for p in res.checkpoints]
    assert names == ["checkpoint-000002", "checkpoint-000004", "final"]
    for p in res.checkpoints:
        assert (p / "adapter_model.safetensors").is_file() and (p / "adapter_config.json").is_file()
    assert json.loads((tmp_path / "finetune_result.json").read_text())["steps"] == 4


def test_refuses_when_hooks_active_or_adapter_present():
    from persona_vectors.steer import steer

    model = make_tiny_model()
    vec = rand_vec(model)
    with steer(model, vec, 1.0, layers=[1]):
        with pytest.raises(RuntimeError, match="Hooks are active"):
            finetune(model, DATA, cfg(), progress=False)
    res = finetune(model, DATA, cfg(max_steps=1), progress=False)
    with pytest.raises(RuntimeError, match="already carries"):
        finetune(model, DATA, cfg(max_steps=1), progress=False)
    res.unload()


# ------------------------------------------------------------------------------------------------ monitor
def test_monitor_shapes_and_shift():
    model = make_tiny_model()
    va, vb = rand_vec(model, name="a"), rand_vec(model, layers=(1, 3), seed=2, name="b")
    base = activation_means(model, PROMPTS, [0, 1, 2, 3], max_new_tokens=4)
    assert isinstance(base, ActivationMeans) and base.samples["last_prompt"][Site(1)].shape == (3, model.d_model)
    assert base.responses is not None and len(base.responses) == 3
    res = finetune(model, DATA, cfg(monitor_every=2, monitor_vectors={"a": va, "b": vb}, monitor_prompts=PROMPTS,
                                    monitor_layer=3), progress=False)
    assert [s for s, _ in res.monitor] == [0, 2, 4]
    assert all(set(d) == {"a", "b"} for _, d in res.monitor)
    assert res.monitor[0][1] == {"a": 0.0, "b": 0.0}
    assert res.monitor_layer == {"a": 3, "b": 3}
    assert set(res.monitor_per_layer[-1][1]["b"]) == {1, 3}
    rep = finetuning_shift(base, model, {"a": va, "b": vb}, PROMPTS, max_new_tokens=4)
    assert len(rep.rows) == 2 * (4 + 2)
    sa = rep.shift("a", "last_prompt")
    assert set(sa) == {0, 1, 2, 3}
    # the in-loop monitor's final value is the same quantity as the last-prompt shift at the monitor layer
    assert res.monitor[-1][1]["a"] == pytest.approx(sa[3], abs=1e-4)
    row = rep.at("b", "response", 1)
    assert row["ci_low"] <= row["shift"] <= row["ci_high"] and row["n"] == 3
    # teacher-forced on the base's answers
    rep_b = finetuning_shift(base, model, [va], PROMPTS, positions=("response",), response_source="base")
    assert rep_b.tuned.responses == base.responses
    with pytest.raises(ValueError, match="same object"):
        finetuning_shift(model, model, va, PROMPTS)
    fig = shift_figure({"plain": res})
    assert len(fig.data) == 3 and fig.data[0].x == (0, 2, 4)
    json.dumps(res.to_json())
    assert json.loads(json.dumps(cfg(monitor_vectors=va, monitor_every=1).to_json()))["monitor_vectors"] == ["a"]
    res.unload()


def test_training_monitor_zero_without_change(tiny):
    mon = TrainingMonitor(tiny, rand_vec(tiny), PROMPTS)
    scalar, per_layer = mon.measure()
    assert all(abs(v) < 1e-9 for v in scalar.values()) and len(per_layer["rand"]) == 4


def test_projection_difference(tiny):
    vec = rand_vec(tiny)
    pd = projection_difference(tiny, DATA[:5], vec, 2, max_new_tokens=4)
    assert pd.per_example.shape == (5,) and len(pd.base_responses) == 5
    assert pd.per_example == pytest.approx(pd.train_proj - pd.base_proj)
    lo, hi = pd.ci95
    assert lo <= pd.mean <= hi
    assert pd.threshold == pytest.approx(0.5 * float(vec[2].norm()))
    # the model's own answers as training data give zero difference; an explicit threshold flags
    own = [c[:-1] + [{"role": "assistant", "content": r if r.strip() else "..."}] for c, r in zip(DATA[:5], pd.base_responses)]
    same = projection_difference(tiny, own, vec, 2, base_responses=pd.base_responses, threshold=-1.0)
    assert abs(same.per_example).max() < 1e-4 and same.flagged == [0, 1, 2, 3, 4]
    assert set(pd.summary()) >= {"mean", "ci95", "n_flagged", "threshold"}


def test_finetune_is_in_place_and_restore_is_exact():
    """finetune changes the model passed in; unload/restore/the with-block give back bit-identical logits."""
    model = make_tiny_model()
    before = logits(model)
    res = finetune(model, DATA, cfg(max_steps=2), progress=False)
    assert res.model is model and not torch.equal(logits(model), before)  # trained in place
    assert res.restore.__name__ == "unload"
    res.restore()
    assert torch.equal(logits(model), before)
    res.unload()  # idempotent
    assert torch.equal(logits(model), before)
    with finetune(model, DATA, cfg(max_steps=2), progress=False) as res2:
        assert not torch.equal(logits(model), before)
    assert res2.adapter.state == "unloaded" and torch.equal(logits(model), before)
    with finetune(model, DATA, cfg(max_steps=2, lora=False, lr=1e-2), progress=False):
        assert not torch.equal(logits(model), before)
    assert torch.equal(logits(model), before)
    res3 = finetune(model, DATA, cfg(max_steps=1), progress=False)
    res3.merge()
    with pytest.raises(RuntimeError, match="merged.*load_model"):
        res3.unload()
