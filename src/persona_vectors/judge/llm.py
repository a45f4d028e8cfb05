"""The optional LLM judge: any OpenAI-compatible chat-completions endpoint, with an on-disk verdict cache.

:class:`LLMJudge` asks the endpoint with retries and a concurrency limit, parses the reply
(:func:`parse_label`) and keeps every verdict in a JSON-lines cache under the library's cache root, so that
re-running an analysis costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._infra.cache import cache_root
from .._infra.jsonl import JsonlLog
from .labels import JudgeResult, LABELS, LABEL_DESCRIPTIONS, _empty_result, _one_hot

if TYPE_CHECKING:  # heavy imports stay lazy so `import persona_vectors.judge` is cheap
    import httpx

__all__ = [
    "LLMJudge",
    "LLMJudgeError",
    "parse_label",
]


LLM_SYSTEM_PROMPT = (
    "You classify a short text in which a language model describes itself "
    "(answering questions such as 'Who are you?', 'How do you feel?', 'Where are you?').\n"
    "Decide which archetype the speaker claims or portrays. Labels:\n"
    + "\n".join(f"- {lab}: {desc}" for lab, desc in LABEL_DESCRIPTIONS.items())
    + "\nJudge the identity the speaker takes on, not topics merely mentioned "
    "(a nurse who mentions computers is human; a ghost who was once human is supernatural).\n"
    "Answer with exactly one label from this list and nothing else: "
    + ", ".join(LABELS)
)


"""System prompt of :class:`LLMJudge`; part of the cache key, so editing it re-queries."""


class LLMJudgeError(RuntimeError):
    """An LLM request failed for good (non-retryable status, or retries exhausted)."""


def parse_label(reply: str) -> str | None:
    """Extract a label from a free-form LLM reply, or ``None`` if it is ambiguous.

    Chat models decorate answers ("**supernatural**", "Label: ai assistant",
    ``{"label": "human"}``, "animal - it is a cat"), so parsing tries, in order: a JSON
    ``label`` field, an exact (normalised) match of the first line (optionally after a
    ``Label:``/``Answer:`` prefix), then the single label mentioned in the first line,
    then the single label mentioned anywhere. A scope that mentions several different
    labels makes the reply ambiguous and it is rejected rather than guessed.
    """
    if not reply or not reply.strip():
        return None
    text = reply.strip()
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and isinstance(obj.get("label"), str):
            text = obj["label"]
    except (ValueError, TypeError):
        pass

    def norm(s: str) -> str:
        return re.sub(r"[\s\-]+", "_", s.strip().lower().strip(" \t.,;:!'\"`*()[]{}<>")).strip("_")

    def mentioned(s: str) -> set[str]:
        low = s.lower()
        return {
            lab
            for lab in LABELS
            if re.search(r"(?<![a-z])" + lab.replace("_", r"[\s_\-]+") + r"(?![a-z])", low)
        }

    first = text.splitlines()[0] if text.splitlines() else text
    for candidate in (norm(first), norm(re.sub(r"^\s*(label|answer|category)\s*[:=]\s*", "", first, flags=re.I))):
        if candidate in LABELS:
            return candidate
    for scope in (first, text):
        found = mentioned(scope)
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    return None


class _JsonlCache:
    """Verdicts by key on the library's one JSON-lines log (:mod:`persona_vectors._infra.jsonl`): safe against
    crashes (a torn last line is skipped and fenced off) and concurrent appends (one ``O_APPEND`` write each),
    each append fsynced.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._log = JsonlLog(path)
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] | None = None
        self._unwritable = False

    def _ensure_loaded(self) -> dict[str, dict[str, Any]]:
        if self._data is None:
            data: dict[str, dict[str, Any]] = {}
            if self.path.is_file():
                for _, rec in self._log.scan().entries:
                    if isinstance(rec.get("key"), str):
                        data[rec["key"]] = rec
            self._data = data
        return self._data

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._ensure_loaded().get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        rec = {"key": key, **record}
        with self._lock:
            data = self._ensure_loaded()
            data[key] = rec
            if self._unwritable:
                return
            try:
                self._log.append([rec], fsync=True)
            except OSError as err:  # a paid-for judgement is kept in memory rather than lost with a traceback
                self._unwritable = True
                warnings.warn(f"cannot write the LLM judge cache {self.path} ({err.strerror or err}); keeping "
                              "judgements in memory only. Pass cache_path= a writable file or set "
                              "PERSONA_VECTORS_CACHE.", stacklevel=2)
                return


def _default_cache_path() -> Path:
    """The LLM judge's cache file under the library's one cache root (``$PERSONA_VECTORS_CACHE`` honoured)."""
    return cache_root() / "llm_judge_cache.jsonl"


class LLMJudge:
    """Judge via an OpenAI-compatible ``/chat/completions`` endpoint.

    Why: the embedding judge is fast and offline but only as good as its few hundred
    training sentences; a capable LLM is a useful second opinion for final numbers.
    Calls are expensive and flaky, hence the machinery:

    * **retries** with exponential backoff (plus jitter, honouring ``Retry-After``) on
      HTTP 429, 5xx, timeouts and connection errors; other 4xx raise immediately;
    * **concurrency limit**: at most ``max_concurrency`` requests in flight per judge
      (a semaphore shared by all threads using this object);
    * **on-disk cache**: JSON lines keyed by ``sha256(model, system prompt, text)``, so
      re-running an analysis does not re-query; identical texts within one call are
      sent once.

    Replies are parsed with :func:`parse_label`; an unparseable reply yields
    ``incoherent`` with ``source="llm-unparsed"`` (and is *not* cached, so a later run
    may retry it). Hard failures raise :class:`LLMJudgeError` rather than silently
    becoming a label, because that would bias the shares.

    Args:
        base_url: API root, e.g. ``"http://127.0.0.1:8000/v1"`` (``/chat/completions``
            is appended).
        model: model name sent in the request (also part of the cache key).
        api_key: bearer token sent to ``base_url``. No key is sent unless you pass one here or name
            the environment variable to read it from (``api_key_env``): the judge never sends a
            credential from the environment to an endpoint you did not pair it with.
        api_key_env: name of the environment variable holding the key for this endpoint, e.g.
            ``"OPENAI_API_KEY"``; an unset or empty variable is an error.
        cache_path: JSON-lines cache file; ``None`` means the per-user cache directory.
        use_cache: set ``False`` to disable the disk cache entirely.
        max_retries: retries after the first attempt.
        max_concurrency: maximum simultaneous requests.
        timeout: per-request timeout in seconds.
        backoff_base: first retry delay in seconds (doubles each retry).
        backoff_max: cap on a single delay.
        temperature: sampling temperature (0 for reproducible labels).
        max_tokens: reply length cap; labels are short.
        system_prompt: override :data:`LLM_SYSTEM_PROMPT`.
        trust_env: let httpx read proxy settings from the environment; pass ``False``
            for a local server so requests cannot be routed through a proxy.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        api_key_env: str | None = None,
        cache_path: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        max_retries: int = 4,
        max_concurrency: int = 4,
        timeout: float = 60.0,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        temperature: float = 0.0,
        max_tokens: int = 16,
        system_prompt: str = LLM_SYSTEM_PROMPT,
        trust_env: bool = True,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        if api_key is not None and api_key_env is not None:
            raise ValueError("pass either api_key or api_key_env, not both")
        if api_key_env is not None:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise ValueError(f"api_key_env={api_key_env!r} names an unset or empty environment variable: "
                                 f"export {api_key_env}=... or pass api_key= directly")
        self.api_key = api_key
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self.trust_env = trust_env
        self.cache_path: Path | None = (
            (Path(cache_path) if cache_path is not None else _default_cache_path()) if use_cache else None
        )
        self._cache = _JsonlCache(self.cache_path) if self.cache_path is not None else None
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    # -- plumbing
    def cache_key(self, text: str) -> str:
        """``sha256`` over (model, system prompt, text): the identity of one judgement."""
        blob = json.dumps([self.model, self.system_prompt, text], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _http(self) -> httpx.Client:
        import httpx

        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=self.timeout,
                    limits=httpx.Limits(max_connections=self.max_concurrency),
                    trust_env=self.trust_env,
                )
            return self._client

    def close(self) -> None:
        """Close the underlying HTTP connection pool."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> LLMJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _messages(self, text: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system_prompt},
            {
                "role": "user",
                "content": f"Text:\n<<<\n{text}\n>>>\nLabel (one of: {', '.join(LABELS)}):",
            },
        ]

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2**attempt)) * (0.5 + 0.5 * random.random())
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.backoff_max))
            except ValueError:
                pass
        return delay

    def _request(self, text: str) -> str:
        """POST one chat completion, retrying transient failures; returns the reply content."""
        import httpx

        url = f"{self.base_url}/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        payload = {
            "model": self.model,
            "messages": self._messages(text),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        last: str = ""
        for attempt in range(self.max_retries + 1):
            retry_after: str | None = None
            try:
                with self._slots:
                    resp = self._http().post(url, json=payload, headers=headers, timeout=self.timeout)
            except httpx.TransportError as exc:  # timeouts, connection resets, DNS, ...
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 429 or resp.status_code >= 500:
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                    retry_after = resp.headers.get("retry-after")
                elif resp.status_code >= 400:
                    raise LLMJudgeError(f"{url} answered HTTP {resp.status_code}: {resp.text[:500]}")
                else:
                    try:
                        content = resp.json()["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        return ""
                    return content if isinstance(content, str) else ""
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, retry_after))
        raise LLMJudgeError(f"{url}: giving up after {self.max_retries + 1} attempts; last error: {last}")

    def _judge_one(self, text: str) -> JudgeResult:
        if not text.strip():
            return _empty_result()
        key = self.cache_key(text)
        if self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None:
                label = parse_label(str(hit.get("reply", "")))
                if label is not None:
                    return JudgeResult(label, _one_hot(label), "llm-cache")
        reply = self._request(text)
        label = parse_label(reply)
        if label is None:
            return JudgeResult(
                "incoherent", _one_hot("incoherent"), "llm-unparsed", f"unparsed reply: {reply[:200]!r}"
            )
        if self._cache is not None:
            self._cache.put(key, {"model": self.model, "label": label, "reply": reply, "text": text})
        return JudgeResult(label, _one_hot(label), "llm")

    def classify(self, texts: Sequence[str]) -> list[JudgeResult]:
        """Judge texts concurrently (the :class:`Judge` protocol); results in input order.

        Raises:
            LLMJudgeError: if a request fails for good (see class docstring). Texts
                judged before the failure are already in the cache.
        """
        texts = [str(t) for t in texts]
        unique = list(dict.fromkeys(texts))
        if not unique:
            return []
        workers = min(self.max_concurrency, len(unique))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-judge") as pool:
            judged = dict(zip(unique, pool.map(self._judge_one, unique)))
        return [judged[t] for t in texts]
