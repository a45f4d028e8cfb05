""":class:`PersonaModel`: a causal LM wrapped in the TransformerLens bridge, with chat templates and
tokenization, TL hook points by :class:`~persona_vectors.sites.Site`, generation (explicit generators,
response regions by context), a weights version bumped on in-place changes, and the residual-norm unit.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import Any, Literal, Sequence

import torch

from ..sites import Site
from . import norms
from .dialogue import RESPONSE_LEAD, STOP_STRINGS, cut_at_stop, render_plain_dialogue
from .chatter import _quiet
from .norms import NormCache
from .placement import input_device, is_dispatched
from .positions import _PositionTracker, position_ids_from_mask, steering_bypassed
from .prefill import SharedPrefillError, shared_prefill_blocker, shared_prefill_cache
from .sampling import _GeneratorSampler, _check_sampling
from .types import ChatText, Messages, ModelInfo, PromptLike, PromptTooLongError
from .weights import weight_fingerprint


#: Model families trained with a beginning-of-sequence token whose converted (GGUF) tokenizers may not add it
#: (Gemma's sets ``add_bos_token=False``; without ``<bos>`` Gemma 3 270M's greedy text degenerates).
BOS_FAMILIES: tuple[str, ...] = ("gemma", "gemma2", "gemma3", "gemma3_text")


def bos_token_to_add(config: Any, tokenizer: Any) -> int | None:
    """The token id every encoded prompt must start with, or ``None`` when the family expects none.

    A tokenizer that adds a BOS itself (``tokenizer("a")`` starts with ``bos_token_id``) or a model of a family in
    :data:`BOS_FAMILIES` needs it; SmolLM2 (``add_bos_token`` False, ChatML template) does not.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    if str(getattr(config, "model_type", "")) in BOS_FAMILIES:
        return int(bos)
    try:
        first = tokenizer("a")["input_ids"][:1]
    except Exception:  # noqa: BLE001 - a tokenizer that cannot encode a plain string adds nothing we can see
        return None
    return int(bos) if first == [bos] else None


_PLACEHOLDER = "\x00PV{}\x00"
_PLACEHOLDER_RE = re.compile("\x00PV(\\d+)\x00")


class PersonaModel:
    """A causal LM wrapped in a TransformerLens bridge, with its chat tokenizer and metadata.

    Attributes: ``bridge`` (TransformerBridge), ``hf`` (the wrapped HF module), ``tokenizer``, ``info``
    (:class:`ModelInfo`). Build one with :func:`load_model` or :meth:`from_hf`.
    """

    def __init__(self, bridge: Any, tokenizer: Any, model_id: str, hooks: str = "resid") -> None:
        if hooks not in ("resid", "full"):
            raise ValueError(f"hooks must be 'resid' or 'full', got {hooks!r}")
        self.bridge = bridge
        self.hf = bridge.original_model
        self.hooks = hooks
        if hooks == "resid":
            _unwrap_block_internals(bridge, self.hf)
        self.tokenizer = tokenizer
        cfg = self.hf.config
        self.info = ModelInfo(
            model_id=model_id,
            n_layers=int(bridge.cfg.n_layers),
            d_model=int(bridge.cfg.d_model),
            fingerprint=weight_fingerprint(self.hf),
        )
        if tokenizer.pad_token is None:
            vocab = tokenizer.get_vocab()
            tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in vocab else tokenizer.eos_token
        tokenizer.padding_side = "left"
        _quiet_bpe_cleanup(tokenizer)
        #: ``"chat_template"`` (the tokenizer's template) or ``"plain"`` (the plain-text dialogue of
        #: :mod:`persona_vectors.models.dialogue`, for base models without a template).
        self.dialogue = "chat_template" if getattr(tokenizer, "chat_template", None) else "plain"
        #: The BOS id prepended to every encoded prompt or text (``None``: the family expects none).
        self.bos_token_id = bos_token_to_add(cfg, tokenizer)
        self.stop_token_ids = self._stop_ids(cfg)
        self.positions = _PositionTracker()
        self.positions.handle = self.hf.register_forward_pre_hook(self.positions.pre_hook, with_kwargs=True)
        self.hf.eval()
        #: Residual norms keyed by (site, positions, weight fingerprint at measurement time).
        self.norm_cache = NormCache()
        self._norm_cache = self.norm_cache  # the older private name
        self._weights_version = 0
        self._weights_key: tuple[int, str] | None = None
        #: ``True`` keeps the old behaviour of tokenizing special-token strings inside message contents as
        #: special tokens (so user text can inject chat structure); the default reads them as plain text.
        self.raw_special_tokens: bool = False
        self._specials: tuple[int, tuple[str, ...]] | None = None
        #: The keyword arguments :func:`load_model` was called with (``None`` for :meth:`from_hf`): enough to load
        #: the same model again in another process, e.g. a replica per Ray actor of a sweep.
        self.load_args: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------------------------- build
    @classmethod
    def from_hf(cls, hf_model: Any, tokenizer: Any, model_id: str | None = None, hooks: str = "resid") -> "PersonaModel":
        """Wrap an already-loaded HF causal LM (e.g. a random-init tiny model in tests).

        ``hooks="resid"`` (default) keeps the bridge's residual-stream hook points (``blocks.L.hook_in`` /
        ``hook_out``) and hands attention, MLP and norms inside each block back to the HF modules with SDPA
        attention; ``hooks="full"`` keeps every TransformerLens hook point (attention patterns included) at
        the cost of the bridge's eager attention, measured 3-6x slower for batched CPU generation.
        """
        from transformer_lens.model_bridge import TransformerBridge

        name = model_id or getattr(hf_model.config, "_name_or_path", "") or "custom"
        with _quiet():
            bridge = TransformerBridge.boot_transformers(
                name, hf_model=hf_model, tokenizer=tokenizer, device=input_device(hf_model), dtype=hf_model.dtype
            )
        if is_dispatched(hf_model):  # the bridge reads the embedding's parameters, on `meta` when offloaded
            bridge.cfg.device = str(input_device(hf_model))
        return cls(bridge, tokenizer, model_id=name, hooks=hooks)

    def _stop_ids(self, cfg: Any) -> list[int]:
        ids: set[int] = set()
        gen_eos = getattr(getattr(self.hf, "generation_config", None), "eos_token_id", None)
        for e in (gen_eos, getattr(cfg, "eos_token_id", None)):
            if isinstance(e, int):
                ids.add(e)
            elif isinstance(e, (list, tuple)):
                ids.update(int(x) for x in e)
        vocab = self.tokenizer.get_vocab()
        for t in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
            if t in vocab:
                ids.add(vocab[t])
        if not ids and self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return sorted(ids)

    # ----------------------------------------------------------------------------------------------- props
    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return self.info.n_layers

    @property
    def d_model(self) -> int:
        """Residual-stream width."""
        return self.info.d_model

    @property
    def device(self) -> torch.device:
        """The device inputs go to: the parameters' device, or under a device map (see :func:`load_model`) the
        input embedding's execution device. Hooks at later layers see activations on their block's device."""
        return input_device(self.hf)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model's parameters."""
        return next(self.hf.parameters()).dtype

    @property
    def device_map(self) -> dict[str, Any] | None:
        """Where a model loaded with ``device_map=`` placed each module (accelerate's ``hf_device_map``), else None."""
        dm = getattr(self.hf, "hf_device_map", None)
        return dict(dm) if dm else None

    def hook_point(self, site: Site) -> Any:
        """The bridge HookPoint module for a site (raises a clear error when out of range)."""
        from ..sites import check_sites

        check_sites([site], self.n_layers)
        return self.bridge.hook_dict[site.hook_name]

    def __repr__(self) -> str:
        i = self.info
        return f"PersonaModel({i.model_id!r}, layers={i.n_layers}, d_model={i.d_model}, fingerprint={i.fingerprint})"

    # ----------------------------------------------------------------------------------------------- chat
    def to_messages(self, prompt: PromptLike, system: str | None = None) -> list[dict[str, str]]:
        """Normalize a prompt (a user string or a message list) to a message list, adding ``system`` if given.

        ``system=None`` keeps the chat template's own behaviour (SmolLM2's template inserts its default
        "You are a helpful AI assistant named SmolLM…" prompt when there is no system message).
        """
        if isinstance(prompt, str):
            msgs: list[dict[str, str]] = [{"role": "user", "content": prompt}]
        else:
            msgs = [dict(m) for m in prompt]
            for m in msgs:
                if "role" not in m or "content" not in m:
                    raise ValueError(f"Each chat message needs 'role' and 'content' keys, got {m!r}")
        if system is not None:
            if msgs and msgs[0]["role"] == "system":
                raise ValueError("The messages already start with a system message; do not also pass system=")
            msgs = [{"role": "system", "content": system}] + msgs
        return msgs

    def chat_text(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        """Render messages with the tokenizer's chat template.

        Returns a :class:`ChatText` (a ``str``). When a message's content contains a special-token string
        (e.g. ``"<|im_end|>"`` typed by a user), it also records which pieces are content, so that
        :meth:`text_ids` / :meth:`encode` / :meth:`chat_ids` tokenize that content as plain text instead of
        letting it act as chat structure (unless :attr:`raw_special_tokens` is set).
        """
        text = self._render(messages, add_generation_prompt)
        if self.raw_special_tokens or not any(self._has_special(m.get("content")) for m in messages):
            return ChatText(text)
        return ChatText(text, self._segments(messages, add_generation_prompt, text))

    def _render(self, messages: Messages, add_generation_prompt: bool) -> str:
        if self.dialogue == "plain":
            return render_plain_dialogue(messages, add_generation_prompt)
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def special_token_strings(self) -> tuple[str, ...]:
        """The tokenizer's special-token strings (longest first), the ones that would act as structure in text.

        Cached per count of added tokens (a special token can only arrive as an added one): ``len(tokenizer)``
        rebuilds the whole vocabulary (≈ 25 ms per call on SmolLM2's 49k tokens, paid on every chat render)."""
        n = len(getattr(self.tokenizer, "added_tokens_decoder", {}) or {})
        if self._specials is None or self._specials[0] != n:
            found = set(getattr(self.tokenizer, "all_special_tokens", []) or [])
            for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values():
                if getattr(t, "special", False):
                    found.add(str(t.content))
            self._specials = (n, tuple(sorted((t for t in found if t), key=len, reverse=True)))
        return self._specials[1]

    def _has_special(self, text: Any) -> bool:
        return isinstance(text, str) and any(t in text for t in self.special_token_strings())

    def _segments(self, messages: Messages, add_generation_prompt: bool, text: str) -> tuple[tuple[str, bool], ...]:
        """Split a rendered chat into template pieces and message contents.

        The template is rendered once more with each string content replaced by a unique placeholder; the
        pieces between placeholders are the template's own text. The result is checked to rebuild ``text``
        exactly (templates that trim contents are handled; ones that transform them otherwise raise).
        """
        msgs = [dict(m) for m in messages]
        contents: list[str] = []
        for m in msgs:
            if isinstance(m.get("content"), str):
                contents.append(m["content"])
                m["content"] = _PLACEHOLDER.format(len(contents) - 1)
        pieces = _PLACEHOLDER_RE.split(self._render(msgs, add_generation_prompt))  # [tmpl, idx, tmpl, ..., tmpl]
        segments: list[tuple[str, bool]] = []
        pos = 0
        for k in range(0, len(pieces), 2):
            piece = pieces[k]
            if not text.startswith(piece, pos):
                pos = -1
                break
            if piece:
                segments.append((piece, False))
            pos += len(piece)
            if k + 1 == len(pieces):
                break
            content, nxt = contents[int(pieces[k + 1])], pieces[k + 2]
            for cand in dict.fromkeys((content, content.strip(), content.lstrip(), content.rstrip())):
                if text.startswith(cand, pos) and text.startswith(nxt, pos + len(cand)):
                    break
            else:
                pos = -1
                break
            if cand:
                segments.append((cand, True))
            pos += len(cand)
        if pos != len(text) or "".join(p for p, _ in segments) != text:
            raise ValueError(
                "The chat template transforms message contents, so special-token strings inside them cannot be "
                "kept as plain text; remove them from the messages or set model.raw_special_tokens = True"
            )
        return tuple(segments)

    @property
    def response_prefix(self) -> str:
        """Text between the generation prompt and an answer's content: ``""`` for chat templates (the template
        ends the prompt with its assistant header), one space for the plain dialogue (``"Assistant:" + " " +
        content``). Response tokens are the tokens of ``response_prefix + content``."""
        return RESPONSE_LEAD if self.dialogue == "plain" else ""

    def response_ids(self, text: str) -> list[int]:
        """Token ids of an assistant answer as it follows the generation prompt (:attr:`response_prefix` +
        content, special-token strings kept as text): the response positions of capture, scoring and training."""
        return self.content_ids(self.response_prefix + text) if text else []

    def with_bos(self, ids: list[int]) -> list[int]:
        """``ids`` with the family's BOS in front (see :func:`bos_token_to_add`); unchanged when the family needs
        none or the ids already start with it. Every whole prompt or text the library encodes passes here."""
        if self.bos_token_id is not None and ids[:1] != [self.bos_token_id]:
            return [self.bos_token_id] + ids
        return ids

    def content_ids(self, text: str) -> list[int]:
        """Token ids of a message content: special-token strings in it are plain text (see
        :attr:`raw_special_tokens`). Use it for text that the chat template wraps, e.g. a response."""
        if not text:
            return []
        split = not self.raw_special_tokens and self._has_special(text)
        kw: dict[str, Any] = {"split_special_tokens": True} if split else {}
        return list(self.tokenizer(text, add_special_tokens=False, **kw)["input_ids"])

    def text_ids(self, text: str) -> list[int]:
        """Token ids of a rendered text (no extra special tokens: the template has them).

        A :class:`ChatText` whose contents hold special-token strings is tokenized piecewise: the template's
        pieces normally, the contents with special tokens split. Any other string tokenizes as a whole.
        """
        segments = getattr(text, "segments", None)
        if segments is None or self.raw_special_tokens:
            return self.with_bos(list(self.tokenizer(str(text), add_special_tokens=False)["input_ids"])) if text else []
        ids: list[int] = []
        for piece, is_content in segments:
            if is_content:
                ids += list(self.tokenizer(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"])
            else:
                ids += list(self.tokenizer(piece, add_special_tokens=False)["input_ids"])
        return self.with_bos(ids)

    def chat_ids(self, messages: Messages, add_generation_prompt: bool = True) -> list[int]:
        """Token ids of rendered messages: ``text_ids(chat_text(messages))``."""
        return self.text_ids(self.chat_text(messages, add_generation_prompt=add_generation_prompt))

    @property
    def context_length(self) -> int | None:
        """The model's context window in tokens, or ``None`` when neither config nor tokenizer states one.

        Read from the HF config (``max_position_embeddings``, ``n_positions``, ...) and the tokenizer's
        ``model_max_length`` (ignored when it is transformers' "unset" sentinel); the smaller real value wins.
        """
        cfg = self.hf.config
        values = []
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
            v = getattr(cfg, name, None)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                values.append(v)
                break
        tm = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tm, int) and 0 < tm < 10**8:
            values.append(tm)
        return min(values) if values else None

    def check_length(self, n_tokens: int, *, new_tokens: int = 0, what: str = "prompt", fix: str | None = None) -> None:
        """Raise :class:`PromptTooLongError` when ``n_tokens + new_tokens`` exceeds :attr:`context_length`.

        The message names the token count, the context length and ``fix`` (default: shorten the input).
        """
        ctx = self.context_length
        if ctx is None or n_tokens + new_tokens <= ctx:
            return
        plus = f" + {new_tokens} new tokens = {n_tokens + new_tokens}" if new_tokens else ""
        if fix is None:
            fix = "shorten it" + (", lower max_new_tokens" if new_tokens else "")
            if what == "prompt" and new_tokens:
                fix += " or pass truncate='left' to drop its oldest tokens"
        raise PromptTooLongError(
            f"The {what} is {n_tokens} tokens{plus}, more than {self.info.model_id}'s context of {ctx} tokens: {fix}"
        )

    def _rows_to_batch(self, rows: Sequence[Sequence[int]], padding_side: str) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if not r:
                continue
            sl = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
            ids[i, sl] = torch.tensor(list(r), dtype=torch.long)
            att[i, sl] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": att.to(self.device)}

    def _texts_ids(self, texts: Sequence[str]) -> list[list[int]]:
        plain = [i for i, t in enumerate(texts) if getattr(t, "segments", None) is None or self.raw_special_tokens]
        rows: list[list[int]] = [[] for _ in texts]
        if plain:
            enc = self.tokenizer([str(texts[i]) for i in plain], add_special_tokens=False)["input_ids"]
            for i, r in zip(plain, enc):
                rows[i] = self.with_bos(list(r)) if r else []
        done = set(plain)
        for i, t in enumerate(texts):
            if i not in done:
                rows[i] = self.text_ids(t)
        return rows

    def encode(self, texts: Sequence[str], padding_side: str = "left") -> dict[str, torch.Tensor]:
        """Tokenize rendered texts (no extra special tokens: the template has them) into a padded batch.

        :class:`ChatText` from :meth:`chat_text` keeps special-token strings inside message contents as plain
        text (see :meth:`text_ids`). Raises :class:`PromptTooLongError` when a text is longer than the context.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts: wrap a single text as [text]")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        rows = self._texts_ids(texts)
        for r in rows:
            self.check_length(len(r), what="text")
        return self._rows_to_batch(rows, padding_side)

    # ----------------------------------------------------------------------------------------------- run
    def forward_logits(self, prompts: Sequence[PromptLike], system: str | None = None) -> torch.Tensor:
        """Logits [batch, pos, vocab] of the rendered prompts (generation prompt appended), left padded."""
        texts = [self.chat_text(self.to_messages(p, system)) for p in prompts]
        rows = self._texts_ids(texts)
        for r in rows:
            self.check_length(len(r))
        enc = self._rows_to_batch(rows, "left")
        with torch.inference_mode():
            return self.hf(**enc, position_ids=position_ids_from_mask(enc["attention_mask"]), use_cache=False).logits

    def response_region(self, prompt_len: int | None) -> contextlib.AbstractContextManager[None]:
        """Inside this block (this thread/context only), absolute positions ``>= prompt_len`` are *response*
        tokens for position-aware hooks (steering with ``positions="response"``, response read-outs).

        :meth:`generate` opens one around its forward passes (the padded prompt length); teacher-forced
        scoring opens one around the answer. ``None``: every position is prompt (a plain forward).

        >>> with model.response_region(len(prompt_ids)):   # doctest: +SKIP
        ...     model.hf(input_ids=prompt_and_answer)
        """
        return self.positions.region(prompt_len)

    def response_window(self, width: int) -> tuple[int, int] | None:
        """Where the response starts in the current forward's window of ``width`` positions.

        Returns ``(k, first)``: window positions ``[k, width)`` are response tokens and window position ``k``
        is response token number ``first`` (0-based; under KV-cache decoding the window is one position at
        the cache offset). ``None`` outside a :meth:`response_region`. For use inside hooks.
        """
        pl = self.positions.prompt_len
        if pl is None:
            return None
        k = self.positions.prompt_end(width)
        return k, self.positions.offset + k - pl

    def _generating(self, prompt_len: int) -> contextlib.AbstractContextManager[None]:
        return self.response_region(prompt_len)

    def generate(
        self,
        prompts: Sequence[PromptLike],
        *,
        system: str | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        use_cache: bool = True,
        batch_size: int | None = None,
        progress: bool = False,
        truncate: Literal["left"] | None = None,
        shared_prefill: bool | Literal["auto"] = False,
    ) -> list[str]:
        """Generate one reply per prompt (batched, left padded, stops at end of turn).

        ``temperature=0`` is greedy; otherwise samples with ``top_p`` in (0, 1] (inverse-CDF draws,
        :func:`~persona_vectors.models.sampling.draw`). ``seed`` makes sampling reproducible (the same seed and
        batch give the same texts) and leaves the global RNG alone; ``seed=None`` draws the seed from it.
        Steering hooks active around this call apply.
        A prompt whose tokens plus ``max_new_tokens`` exceed :attr:`context_length` raises
        :class:`PromptTooLongError` before any forward, unless ``truncate="left"`` (drop the prompt's oldest
        tokens so it fits, with a warning). ``shared_prefill``: see :meth:`generate_tokens`.
        """
        if isinstance(prompts, str):
            raise TypeError("generate() takes a list of prompts: wrap a single prompt as [prompt]")
        _check_sampling(max_new_tokens, temperature, top_p, truncate)
        if not prompts:
            return []
        bs = batch_size or len(prompts)
        out: list[str] = []
        starts = range(0, len(prompts), bs)
        it: Any = starts
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(starts, desc="generate", unit="batch")
        for i in it:
            chunk = prompts[i : i + bs]
            toks = self.generate_tokens(
                chunk, system=system, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                seed=None if seed is None else seed + i, use_cache=use_cache, truncate=truncate,
                shared_prefill=shared_prefill,
            )
            out.extend(self.decode_response(t) for t in toks)
        return out

    def _stop_string_criteria(self) -> Any:
        """The :data:`STOP_STRINGS` criterion for ``hf.generate``, built once per model (and tokenizer size).

        Same criterion as ``generate(stop_strings=..., tokenizer=...)``, which rebuilds it on every call:
        transformers' own cache misses because ``get_vocab()`` of a fast tokenizer comes back in a different order
        each call, and building it walks the whole vocabulary (about 9 s for Gemma's 262k tokens on one core).
        """
        from transformers import StoppingCriteriaList
        from transformers.generation.stopping_criteria import StopStringCriteria

        key = (len(self.tokenizer), STOP_STRINGS)
        cached = getattr(self, "_stop_criteria", None)
        if cached is None or cached[0] != key:
            cached = (key, StopStringCriteria(tokenizer=self.tokenizer, stop_strings=list(STOP_STRINGS)))
            self._stop_criteria = cached
        return StoppingCriteriaList([cached[1]])

    def generate_tokens(
        self,
        prompts: Sequence[PromptLike],
        *,
        system: str | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        use_cache: bool = True,
        min_new_tokens: int = 0,
        truncate: Literal["left"] | None = None,
        shared_prefill: bool | Literal["auto"] = False,
    ) -> list[torch.Tensor]:
        """Like :meth:`generate` but returns the new token ids of each row (end-of-turn stripped).

        ``shared_prefill=True``: all rows have the same prompt and only response-position steering is active, so
        the prompt is prefilled once and its KV cache shared by the rows (:mod:`persona_vectors.models.prefill`;
        same tokens as the per-row prefill, K times less prefill work); raises :class:`SharedPrefillError` naming
        what prevents it. ``"auto"``: share when possible, else prefill per row. ``False`` (default): per row.
        """
        if isinstance(prompts, str):
            raise TypeError("generate_tokens() takes a list of prompts: wrap a single prompt as [prompt]")
        _check_sampling(max_new_tokens, temperature, top_p, truncate)
        texts = [self.chat_text(self.to_messages(p, system)) for p in prompts]
        rows = self._texts_ids(texts)
        ctx = self.context_length
        for i, r in enumerate(rows):
            if truncate == "left" and ctx is not None and len(r) + max_new_tokens > ctx:
                keep = ctx - max_new_tokens
                if keep < 1:
                    raise PromptTooLongError(
                        f"max_new_tokens={max_new_tokens} leaves no room for a prompt in {self.info.model_id}'s "
                        f"context of {ctx} tokens: lower max_new_tokens"
                    )
                warnings.warn(f"Prompt {i} is {len(r)} tokens: truncated to its last {keep} tokens "
                              f"(context {ctx} - max_new_tokens {max_new_tokens})", stacklevel=2)
                rows[i] = r[len(r) - keep :]
            self.check_length(len(rows[i]), new_tokens=max_new_tokens)
        share = self._share_prefill(rows, shared_prefill, use_cache)
        enc = self._rows_to_batch(rows, "left")
        prompt_len = enc["input_ids"].shape[1]
        do_sample = temperature > 0
        kw: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens or None,
            use_cache=use_cache,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if self.dialogue == "plain":  # a base model goes on to write the next turn: stop there
            kw["stopping_criteria"] = self._stop_string_criteria()
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if do_sample:  # our inverse-CDF sampler with an explicit generator (seed=None: seeded from the global RNG)
            from transformers import LogitsProcessorList

            if seed is None:
                seed = int(torch.randint(0, 2**62, (1,)).item())
            gen = torch.Generator(device=self.device).manual_seed(int(seed))
            kw["logits_processor"] = LogitsProcessorList([_GeneratorSampler(temperature, top_p, gen)])
        with self._generating(prompt_len), torch.inference_mode(), _quiet():
            if share:
                kw["past_key_values"] = shared_prefill_cache(self, rows[0], len(rows))
            seqs = self.hf.generate(**enc, **kw)
        new = seqs[:, prompt_len:]
        result = []
        stops = set(self.stop_token_ids) | {self.tokenizer.pad_token_id}
        for row in new:
            ids = row.tolist()
            cut = next((j for j, t in enumerate(ids) if t in stops), len(ids))
            if self.dialogue == "plain":
                cut = len(cut_at_stop(self.tokenizer, ids[:cut]))
            result.append(row[:cut].cpu())
        return result

    def _share_prefill(self, rows: Sequence[Sequence[int]], shared_prefill: bool | str, use_cache: bool) -> bool:
        if shared_prefill not in (True, False, "auto"):
            raise ValueError(f"shared_prefill must be True, False or 'auto', got {shared_prefill!r}")
        if shared_prefill is False:
            return False
        why = shared_prefill_blocker(self, rows, use_cache)
        if why is not None and shared_prefill is True:
            raise SharedPrefillError(
                f"shared_prefill=True but the rows cannot share one prefill: {why}. Steer with "
                "positions='response' only, pass one prompt repeated per row, or use shared_prefill='auto' "
                "(falls back to prefilling each row)")
        return why is None

    def decode_response(self, ids: torch.Tensor) -> str:
        """Decode generated token ids to text."""
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    @property
    def weights_version(self) -> int:
        """How many times the weights were changed in place through the library (adapter injected, training
        step, merge, unload, weights restored); 0 for weights as loaded. See :meth:`bump_weights_version`."""
        return self._weights_version

    def bump_weights_version(self) -> int:
        """Record that the weights changed in place (finetuning calls this); returns the new version.

        Caches keyed by :meth:`weights_key` then stop serving entries of the old weights.
        """
        self._weights_version += 1
        return self._weights_version

    def weights_key(self) -> str:
        """Key of the weights as they are now, for every activation / answer / norm cache.

        ``info.fingerprint`` while the weights are as loaded (version 0); afterwards the fingerprint of the
        current weights (:meth:`weights_fingerprint`, memoized per :attr:`weights_version`), so a model
        finetuned in place never reads the base model's cached generations or activations, and a model
        restored to its base weights reads them again. ``info.fingerprint`` itself keeps naming the base
        model (vectors extracted on it still apply).
        """
        if self._weights_version == 0:
            return self.info.fingerprint
        if self._weights_key is None or self._weights_key[0] != self._weights_version:
            self._weights_key = (self._weights_version, self.weights_fingerprint())
        return self._weights_key[1]

    def weights_fingerprint(self) -> str:
        """:func:`weight_fingerprint` of the current weights (recomputed: it changes after finetuning or
        in-place edits, unlike ``info.fingerprint`` which is taken at load time). Costs milliseconds."""
        return weight_fingerprint(self.hf)

    def cached_residual_norm(self, site: Site, positions: str = "response", *, fingerprint: str | None = None
                             ) -> float | None:
        """The residual norm :meth:`residual_norm` would return, if already measured on the current weights.

        ``fingerprint``: :meth:`weights_fingerprint` when the caller has just computed it (saves recomputing
        it per site); it must describe the current weights.
        """
        return self.norm_cache.get(site, positions, fingerprint or self.weights_fingerprint())

    def residual_norm(self, site: Site, positions: str = "response", *, fingerprint: str | None = None) -> float:
        """Mean L2 norm of the residual stream at ``site`` over neutral chat turns (cached per model weights).

        This is the unit of *relative* steering coefficients: ``alpha_rel = 1`` adds a vector as long as an
        average residual-stream vector at that site. It is always measured on the unsteered model (steering
        hooks active around the call skip themselves during the measurement, see :func:`steering_bypassed`),
        and the cache is keyed by the current weight fingerprint, so changed weights are measured afresh
        (``fingerprint``: as in :meth:`cached_residual_norm`).
        """
        key = (site, positions, fingerprint or self.weights_fingerprint())
        value = self.norm_cache.get(*key)
        if value is None:
            if norms._NORM_MEASURE is None:  # pragma: no cover - importing the package installs it
                raise RuntimeError("no residual-norm measurement is installed: import persona_vectors.record")
            with steering_bypassed():
                value = float(norms._NORM_MEASURE(self, site, positions))
            self.norm_cache.put(*key, value)
        return value


def _quiet_bpe_cleanup(tokenizer: Any) -> None:
    """transformers ignores ``clean_up_tokenization_spaces`` for BPE tokenizers and warns on every decode when it
    is set (GGUF conversions set it): turn it off there, which changes no output."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(backend.model).__name__ == "BPE" and getattr(tokenizer, "clean_up_tokenization_spaces", False):
        tokenizer.clean_up_tokenization_spaces = False


def _unwrap_block_internals(bridge: Any, hf: Any) -> None:
    """Give each block's attention/MLP/norm submodules back to HF; keep the block-level resid hook points.

    The bridge re-implements attention eagerly so it can expose attention scores and patterns; on CPU with
    batch 16 that ran 3-6x slower than HF's SDPA path. The residual-stream hooks this library uses live on
    the block bridges themselves and keep firing.
    """
    for blk in getattr(bridge, "blocks", []):
        inner = getattr(blk, "original_component", None)
        if inner is None:
            continue
        for name, child in list(inner.named_children()):
            orig = getattr(child, "original_component", None)
            if orig is not None and isinstance(orig, torch.nn.Module):
                setattr(inner, name, orig)
    if hasattr(hf, "set_attn_implementation"):
        with contextlib.suppress(Exception):
            hf.set_attn_implementation("sdpa")
