"""The embedded-model registry, chunked assets, the BOS rule, the plain-dialogue format of base models, the GGUF
tokenizer repair and the bridge pre-flight (fast: no real model weights)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from persona_vectors._infra import assets as asset_mod
from persona_vectors.models import (
    BOS_FAMILIES,
    EMBEDDED_MODELS,
    ModelLoadError,
    assembled_path,
    bos_token_to_add,
    bridge_architecture,
    embedded_model,
    embedded_names,
    load_model,
    render_plain_dialogue,
)
from persona_vectors.models.dialogue import STOP_STRINGS, cut_at_stop


# ------------------------------------------------------------------------------------------------ registry
def test_registry_names_aliases_and_facts() -> None:
    assert embedded_names() == ["smollm2-135m-instruct", "gemma-3-270m"]
    assert embedded_model("Gemma3-270M").name == "gemma-3-270m"
    assert embedded_model("smollm2").name == "smollm2-135m-instruct"
    assert embedded_model("gpt2") is None
    gemma = EMBEDDED_MODELS["gemma-3-270m"]
    assert gemma.kind == "base" and "Gemma" in gemma.licence and gemma.hf_id == "google/gemma-3-270m"


def test_unknown_name_lists_embedded_models_and_how_to_load_any(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        load_model("no-such-model-anywhere")
    msg = str(err.value)
    assert "smollm2-135m-instruct" in msg and "gemma-3-270m" in msg
    assert "allow_download=True" in msg and "local directory" in msg
    with pytest.raises(ModelLoadError, match="gemma-3-270m"):
        load_model(tmp_path / "missing.gguf")


def test_bridge_preflight_names_the_architecture_and_fills_gguf_configs() -> None:
    from transformers import PretrainedConfig

    cfg = PretrainedConfig(architectures=["MadeUpForCausalLM"])
    cfg.model_type = "made_up"
    with pytest.raises(ModelLoadError) as err:
        bridge_architecture(cfg)
    msg = str(err.value)
    assert "'MadeUpForCausalLM'" in msg and "LlamaForCausalLM" in msg and "Gemma3ForCausalLM" in msg
    assert "\n" not in msg
    gguf_like = PretrainedConfig()  # a GGUF conversion: model_type set, no architectures
    gguf_like.model_type = "gemma3_text"
    assert bridge_architecture(gguf_like) == "Gemma3ForCausalLM"
    assert gguf_like.architectures == ["Gemma3ForCausalLM"]


# ------------------------------------------------------------------------------------------------ chunked asset
def _fake_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payloads: list[bytes], sha: str | None = None):
    root = tmp_path / "site"
    parts = []
    for i, data in enumerate(payloads):
        pkg = root / f"fakechunk_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"x.part{i:02d}").write_bytes(data)
        parts.append((f"fakechunk_part{i}", f"data/x.part{i:02d}"))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(tmp_path / "cache"))
    asset = asset_mod.SplitAsset(name="fake-split", filename="fake.gguf",
                                 sha256=sha or hashlib.sha256(b"".join(payloads)).hexdigest(),
                                 parts=tuple(parts), description="A fake model", install="pip install fake")
    asset_mod.register_split_asset(asset)
    return asset


def test_chunked_asset_is_joined_once_verified_and_rejoined_when_changed(tmp_path, monkeypatch) -> None:
    asset = _fake_split(tmp_path, monkeypatch, [b"abc" * 1000, b"def" * 1000, b"g"])
    path = assembled_path(asset, progress=False)
    assert path.read_bytes() == b"abc" * 1000 + b"def" * 1000 + b"g"
    assert path.parent == tmp_path / "cache" / "gguf"
    mtime = path.stat().st_mtime_ns
    assert assembled_path(asset, progress=False) == path and path.stat().st_mtime_ns == mtime  # not rejoined
    path.write_bytes(b"tampered")
    with pytest.warns(UserWarning, match="does not match its recorded sha256"):
        assert assembled_path(asset, progress=False).read_bytes().startswith(b"abcabc")


def test_chunked_asset_with_wrong_bytes_or_missing_part_fails_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    from persona_vectors.models import EmbeddedModelMissingError

    asset = _fake_split(tmp_path, monkeypatch, [b"one", b"two"], sha="0" * 64)
    with pytest.raises(EmbeddedModelMissingError, match="sha256"):
        assembled_path(asset, progress=False)
    assert not any((tmp_path / "cache" / "gguf").iterdir())  # no half-written or wrong file
    missing = asset_mod.SplitAsset(name="fake-missing", filename="m.gguf", sha256="0" * 64,
                                   parts=(("fakechunk_part0", "data/x.part00"), ("not_installed_pkg", "data/y")),
                                   description="A fake model", install="pip install fake-parts")
    asset_mod.register_split_asset(missing)
    with pytest.raises(EmbeddedModelMissingError, match="not_installed_pkg.*pip install fake-parts"):
        assembled_path(missing, progress=False)


# ------------------------------------------------------------------------------------------------ BOS rule
class _Tok:
    def __init__(self, bos: int | None, adds: bool) -> None:
        self.bos_token_id, self.adds = bos, adds

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        ids = [ord(c) for c in text]
        return {"input_ids": ([self.bos_token_id] if self.adds and add_special_tokens else []) + ids}


@pytest.mark.parametrize("model_type,bos,adds,expected", [
    ("gemma3_text", 2, False, 2),  # Gemma's GGUF tokenizer does not add it: the family rule does
    ("llama", 1, False, None),     # SmolLM2: no BOS (its ChatML template starts every prompt)
    ("llama", 1, True, 1),         # a tokenizer that adds its own BOS keeps it
    ("gemma", None, False, None),  # no BOS token at all
])
def test_bos_rule(model_type, bos, adds, expected) -> None:
    assert "gemma3_text" in BOS_FAMILIES
    assert bos_token_to_add(SimpleNamespace(model_type=model_type), _Tok(bos, adds)) == expected


# ------------------------------------------------------------------------------------------------ dialogue
def test_plain_dialogue_rendering() -> None:
    msgs = [{"role": "system", "content": "You are a ghost."}, {"role": "user", "content": "Who are you?"},
            {"role": "assistant", "content": "A ghost."}, {"role": "user", "content": "Why?"}]
    assert render_plain_dialogue(msgs) == ("You are a ghost.\n\nUser: Who are you?\nAssistant: A ghost.\n"
                                           "User: Why?\nAssistant:")
    assert render_plain_dialogue(msgs[1:3], add_generation_prompt=False) == "User: Who are you?\nAssistant: A ghost.\n"
    empty = [{"role": "system", "content": ""}, msgs[1]]  # the catalogue's "none" condition
    assert render_plain_dialogue(empty) == render_plain_dialogue(msgs[1:2]) == "User: Who are you?\nAssistant:"
    with pytest.raises(ValueError, match="only as the first"):
        render_plain_dialogue([msgs[1], msgs[0]])
    with pytest.raises(ValueError, match="system, user or assistant"):
        render_plain_dialogue([{"role": "tool", "content": "x"}])


class _CharTok:
    def decode(self, ids, skip_special_tokens=False) -> str:
        return "".join(chr(i) for i in ids)


def test_cut_at_stop_drops_the_next_turn() -> None:
    tok = _CharTok()
    ids = [ord(c) for c in "I am a ghost.\nUser: and you?"]
    assert tok.decode(cut_at_stop(tok, ids)) == "I am a ghost."
    assert tok.decode(cut_at_stop(tok, [ord(c) for c in "No stop here"])) == "No stop here"
    assert "\nUser:" in STOP_STRINGS


def test_tiny_model_without_template_uses_the_plain_dialogue() -> None:
    """Every route sees the same prompt and response positions: chat_ids, capture, training and scoring."""
    from conftest import make_tiny_model, make_tiny_tokenizer

    from persona_vectors.capture import tokenize_conversation
    from persona_vectors.finetune.data import build_example
    from persona_vectors.models import PersonaModel
    from persona_vectors.readout.scoring import _continuation_rows

    tiny = make_tiny_model()
    tok = make_tiny_tokenizer()
    tok.chat_template = None
    m = PersonaModel(tiny.bridge, tok, model_id="tiny-base")
    assert m.dialogue == "plain" and m.response_prefix == " "
    conv = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A ghost."}]
    prompt = m.chat_ids(conv[:1])
    assert m.chat_text(conv[:1]).endswith("User: Who are you?\nAssistant:")
    ids, mask = tokenize_conversation(m, conv, "response")
    resp = [i for i, keep in zip(ids, mask) if keep]
    assert ids[: len(prompt)] == prompt and resp == m.response_ids("A ghost.")
    assert m.tokenizer.decode(resp) == " A ghost."
    ex = build_example(m, conv)
    assert list(ex.input_ids[: ex.n_prompt]) == prompt
    assert [t for t in ex.labels if t != -100][: len(resp)] == resp
    rows, starts, _ = _continuation_rows(m, ["Who are you?"], ["a ghost"], "I am", None)
    assert m.tokenizer.decode(rows[0][len(prompt):]) == " I am a ghost"
