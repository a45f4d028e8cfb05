"""``persona-vectors serve`` against real clients: the official ``openai`` package on a live uvicorn server,
bad requests, dynamic batching (greedy batched == alone), and the chat page in headless Chromium.

The fast tests serve the random-init tiny Llama (tests/conftest.py) with vectors saved in a temporary
directory; the ``slow`` test measures batched-vs-alone agreement on the embedded SmolLM2.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import threading
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from conftest import CHROMEDRIVER, CHROMIUM, make_tiny_model, require_browser  # noqa: E402

from persona_vectors import PersonaVector  # noqa: E402
from persona_vectors.serve import Limits, create_app  # noqa: E402
from persona_vectors.vector import Provenance  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("pirate", "ghost", "cat", "robot", "poet", "sailor", "wizard", "assistant")
MSG = [{"role": "user", "content": "Hi, who are you?"}]


def save_vectors(model, root: Path, names=NAMES, seed: int = 1) -> Path:
    g = torch.Generator().manual_seed(seed)
    for name in names:
        prov = Provenance(model.info.model_id, model.info.fingerprint, model.d_model, name=name, route="test")
        PersonaVector(range(model.n_layers), torch.randn(model.n_layers, model.d_model, generator=g), prov).save(root / name)
    return root


def LiveServer(app):
    """The library's background server (a daemon thread on a free loopback port)."""
    from persona_vectors.serve import serve_in_background

    return serve_in_background(app)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = make_tiny_model()
    vdir = save_vectors(model, tmp_path_factory.mktemp("vectors"))
    app = create_app(model, vectors_dir=vdir, catalogue="off", axis="assistant", window_ms=20,
                     limits=Limits(max_tokens=16, max_n=4, max_prompt_tokens=400, max_body_bytes=20_000))
    srv = LiveServer(app)
    srv.model = model
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def chat(client, steering=None, **kw):
    kw.setdefault("max_tokens", 6)
    kw.setdefault("temperature", 0)
    extra = {"steering": steering} if steering is not None else None
    return client.chat.completions.create(model="tiny", messages=kw.pop("messages", MSG), extra_body=extra, **kw)


# ================================================================================================ openai client
def test_plain_chat_has_text_usage_and_projection(client, served):
    r = chat(client)
    assert isinstance(r.choices[0].message.content, str) and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 6
    proj = r.model_extra["persona_projection"]
    axis_layer = f"L{served.model.n_layers // 2}"
    assert set(proj["axis"]) == {axis_layer} and math.isfinite(proj["axis"][axis_layer])
    assert client.models.list().data[0].id == served.model.info.model_id


def test_greedy_reply_equals_library_generate(client, served):
    """The server's row path (own sampler, hooks, padding) gives the library's greedy tokens."""
    r = chat(client, max_tokens=8)
    ids = served.model.generate_tokens([MSG], max_new_tokens=8)[0]
    assert r.choices[0].message.content.strip() == served.model.decode_response(ids)  # the library strips


def test_stream_joins_to_the_plain_reply(client):
    plain = chat(client, max_tokens=8).choices[0].message.content
    pieces, finish, proj = [], None, None
    for ev in client.chat.completions.create(model="tiny", messages=MSG, max_tokens=8, temperature=0, stream=True):
        for ch in ev.choices:
            pieces.append(ch.delta.content or "")
            if ch.finish_reason:
                finish, proj = ch.finish_reason, ch.model_extra.get("persona_projection")
    assert "".join(pieces) == plain
    assert finish in ("stop", "length") and proj is not None and "axis" in proj


def test_steering_changes_the_reply_and_reports_projection(client):
    base = chat(client).choices[0].message.content
    r = chat(client, steering=[{"vector": "pirate", "alpha": 40.0, "layers": [1]}])
    assert r.choices[0].message.content != base
    assert r.model_extra["steering"][0]["vector"] == "pirate"
    proj = r.model_extra["persona_projection"]
    assert set(proj["vectors"]["pirate"]) == {"L1"} and "L1" in proj["axis"]


def test_completions_endpoint_and_stop(client):
    r = client.completions.create(model="tiny", prompt="Once upon", max_tokens=6, temperature=0)
    text = r.choices[0].text
    assert isinstance(text, str)
    if len(text) > 2:
        cut = client.completions.create(model="tiny", prompt="Once upon", max_tokens=6, temperature=0, stop=[text[2]])
        assert cut.choices[0].text == text[:text.index(text[2])] and cut.choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible_and_n_rows_differ(client):
    a = chat(client, temperature=1.0, seed=7, n=3)
    b = chat(client, temperature=1.0, seed=7, n=3)
    texts = [c.message.content for c in a.choices]
    assert texts == [c.message.content for c in b.choices]
    assert len(set(texts)) > 1  # n rows are seeded seed, seed+1, ...


def test_concurrent_requests_with_different_vectors_batch_and_match_alone(client, served):
    specs = [None] + [[{"vector": n, "alpha": 8.0, "layers": [2]}] for n in NAMES[:5]] + \
            [[{"vector": "ghost", "alpha": 0.5, "layers": [1], "relative": True}],
             [{"vector": "assistant", "operator": "cap", "threshold": 0.0, "layers": [2]}]]
    alone = [chat(client, steering=s).choices[0].message.content for s in specs]
    before = httpx.get(served.url + "/v1/stats").json()
    barrier = threading.Barrier(len(specs))

    def go(s):
        barrier.wait()
        return chat(client, steering=s).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(len(specs)) as ex:
        together = list(ex.map(go, specs))
    after = httpx.get(served.url + "/v1/stats").json()
    assert together == alone
    assert after["max_rows"] > 1, "concurrent requests never shared a batch"
    assert after["batches"] - before["batches"] < len(specs)


# ================================================================================================ bad requests
BAD = [
    ({"messages": MSG, "steering": [{"vector": "nobody", "alpha": 1}]}, 400, "steering.vector"),
    ({"messages": MSG, "steering": [{"vector": "../../etc/passwd"}]}, 400, "steering.0.vector"),
    ({"messages": MSG, "steering": [{"vector": "/tmp/v"}]}, 400, "steering.0.vector"),
    ({"messages": MSG, "steering": [{"vector": "pirate", "alpha": float("nan")}]}, 400, "steering.0.alpha"),
    ({"messages": MSG, "steering": [{"vector": "pirate", "layers": [99]}]}, 400, "steering.layers"),
    ({"messages": MSG, "steering": [{"vector": "pirate", "operator": "explode"}]}, 400, "steering.operator"),
    ({"messages": MSG, "steering": [{"vector": "pirate", "operator": "cap"}]}, 400, "steering.threshold"),
    ({"messages": MSG, "steering": [{"vector": "pirate", "operator": "ablate", "relative": True}]}, 400,
     "steering.relative"),
    ({"messages": MSG, "steering": [{"vector": "pirate", "positions": "middle"}]}, 400, "steering.positions"),
    ({"messages": MSG, "steering": [{"vector": "pirate", "colour": "red"}]}, 400, "steering.0.colour"),
    ({"messages": [{"role": "user", "content": "x" * 600}]}, 400, "messages"),
    ({"messages": MSG, "max_tokens": 10_000}, 400, "max_tokens"),
    ({"messages": MSG, "n": 50}, 400, "n"),
    ({"messages": MSG, "temperature": -1}, 400, "temperature"),
    ({"messages": []}, 400, "messages"),
    ({"prompt_only": "x"}, 400, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
]


def _post(served, body, raw: bytes | None = None, path="/v1/chat/completions"):
    data = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(served.url + path, content=data, headers={"Content-Type": "application/json"}, timeout=60)


@pytest.mark.parametrize("body,status,param", BAD, ids=[b[2] + f"-{i}" for i, b in enumerate(BAD)])
def test_bad_request_gets_4xx_naming_the_field_then_service_continues(served, body, status, param):
    r = _post(served, {**body, "max_tokens": body.get("max_tokens", 4)})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and param in err["message"] and len(err["message"]) > len(param) + 5
    ok = _post(served, {"messages": MSG, "max_tokens": 3})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["role"] == "assistant"


def test_malformed_json_oversized_body_and_openai_error_type(served, client):
    r = _post(served, None, raw=b'{"messages": [')
    assert r.status_code == 400 and r.json()["error"]["param"] == "body" and "malformed JSON" in r.json()["error"]["message"]
    r = _post(served, None, raw=json.dumps({"messages": [{"role": "user", "content": "y" * 30_000}]}).encode())
    assert r.status_code == 413 and r.json()["error"]["param"] == "body"
    with pytest.raises(openai.BadRequestError) as exc:
        chat(client, steering=[{"vector": "nobody"}])
    assert "unknown vector 'nobody'" in str(exc.value)
    assert chat(client).choices[0].message.content is not None


def test_token_auth_and_vector_listing(tmp_path):
    from fastapi.testclient import TestClient

    model = make_tiny_model()
    app = create_app(model, vectors_dir=save_vectors(model, tmp_path, names=("pirate",)), catalogue="off",
                     token="s3cret", axis=None)
    with TestClient(app) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        h = {"Authorization": "Bearer s3cret"}
        listing = c.get("/v1/steering/vectors", headers=h).json()["data"]
        assert [v["name"] for v in listing] == ["pirate"] and listing[0]["layers"] == list(range(model.n_layers))
        r = c.post("/v1/chat/completions", headers=h, json={"messages": MSG, "max_tokens": 3})
        assert r.status_code == 200 and "axis" not in r.json()["persona_projection"]
        assert c.get("/").status_code == 200  # the page itself needs no token; its API calls do


# ================================================================================================ page



def _driver():
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_chat_page_in_headless_chromium(served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    drv = _driver()
    try:
        drv.get(served.url + "/")
        wait = WebDriverWait(drv, 60)
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
        assert drv.execute_script("return typeof Plotly") == "object"  # inlined: no network
        points = "var c = document.getElementById('chart'); return (c.data && c.data[0]) ? c.data[0].x.length : 0;"
        replies = "return document.querySelectorAll('.msg.assistant').length"

        def say(text: str, n: int) -> None:
            box = drv.find_element(By.ID, "msg")
            box.send_keys(text)
            drv.find_element(By.ID, "send").click()
            wait.until(lambda d: not d.execute_script("return window.pvState.busy")
                       and (d.execute_script(replies) == n or d.find_elements(By.CSS_SELECTOR, ".msg.error")))
            errors = drv.find_elements(By.CSS_SELECTOR, ".msg.error")
            assert not errors, errors[0].text
            assert drv.execute_script(replies) == n

        say("Hello there", 1)
        assert drv.execute_script(points) == 1
        Select(drv.find_element(By.ID, "vector")).select_by_value("pirate")
        slider = drv.find_element(By.ID, "alpha")
        drv.execute_script("arguments[0].value = 3; arguments[0].dispatchEvent(new Event('input'));", slider)
        assert drv.find_element(By.ID, "alphaVal").text == "3"
        say("Tell me more", 2)
        assert drv.execute_script(points) == 2
        drv.find_element(By.ID, "stabilise").click()
        say("And now?", 3)
        assert drv.execute_script(points) == 3
        data = drv.execute_script("return window.pvExport()")
        assert len(data["messages"]) == 6 and len(data["turns"]) == 3
        assert data["turns"][1]["steering"][0]["vector"] == "pirate"
        assert [s["operator"] for s in data["turns"][2]["steering"]] == ["add", "cap"]
        assert all("axis" in t["persona_projection"] for t in data["turns"])
    finally:
        drv.quit()


# ================================================================================================ embedded model
@pytest.mark.slow
def test_greedy_batched_equals_alone_on_smollm(smol, tmp_path):
    """SmolLM2: 6 concurrent greedy requests (different steering) vs the same requests one at a time."""
    from fastapi.testclient import TestClient

    save_vectors(smol, tmp_path, names=("pirate", "ghost"))
    app = create_app(smol, vectors_dir=tmp_path, catalogue="off", axis=None, window_ms=50)
    prompts = ["Who are you?", "Name a colour.", "What is 2+2?"]
    specs = [None, [{"vector": "pirate", "alpha": 0.5, "layers": [15], "relative": True}]]
    bodies = [{"messages": [{"role": "user", "content": p}], "max_tokens": 8, "temperature": 0,
               **({"steering": s} if s else {})} for p in prompts for s in specs]
    with TestClient(app) as c:
        alone = [c.post("/v1/chat/completions", json=b).json()["choices"][0]["message"]["content"] for b in bodies]
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as ex:
            together = list(ex.map(lambda b: c.post("/v1/chat/completions", json=b).json(), bodies))
        stats = c.get("/v1/stats").json()
    texts = [t["choices"][0]["message"]["content"] for t in together]
    same = sum(a == b for a, b in zip(alone, texts))
    print(f"\nSmolLM2 greedy batched==alone: {same}/{len(bodies)}; max batch {stats['max_rows']}")
    assert stats["max_rows"] > 1
    assert same == len(bodies), list(zip(alone, texts))


def test_builtin_assistant_axis_is_built_on_the_model_worker_from_role_means(monkeypatch) -> None:
    """``assistant_axis`` (the default --axis) is the library's Assistant Axis, computed once through the
    worker callable; with the catalogue off it is not served."""
    from persona_vectors.serve.resolve import AXIS_NAME, VectorRegistry
    from persona_vectors.serve.schema import RequestError

    model = make_tiny_model()
    reg = VectorRegistry(model, None, "cached")
    calls = []
    prov = Provenance(model.info.model_id, model.info.fingerprint, model.d_model, name=AXIS_NAME, route="axis")
    fake = PersonaVector(range(model.n_layers), torch.ones(model.n_layers, model.d_model), prov)
    monkeypatch.setattr(VectorRegistry, "assistant_axis", lambda self: fake)

    def worker(fn):
        calls.append(fn)
        return fn()

    assert reg.catalogue_names()[0] == AXIS_NAME
    assert reg.get(AXIS_NAME, build=worker) is fake and reg.get(AXIS_NAME, build=worker) is fake
    assert len(calls) == 1  # cached after the first build
    with pytest.raises(RequestError):
        VectorRegistry(model, None, "off").get(AXIS_NAME, build=worker)
