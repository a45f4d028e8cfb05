"""The FastAPI application: OpenAI-compatible endpoints with per-request steering, and the chat page.

>>> app = create_app(model, vectors_dir="vectors/")           # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)            # doctest: +SKIP

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions`` (OpenAI wire format plus ``steering``),
``GET /v1/models``, ``GET /v1/steering/vectors``, ``GET /v1/steering/info``, ``GET /v1/stats``, and the page
at ``/``. Every bad request is a 4xx JSON error ``{"error": {"message", "type", "param", "code"}}`` naming
the field and the fix; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Optional, Union

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError

from ..sites import Site
from .batching import Batcher
from .engine import Row, RowResult
from .resolve import AXIS_NAME, CatalogueMode, ResolvedSpec, VectorRegistry
from .schema import ChatRequest, CompletionRequest, Limits, RequestError, check_limits, pydantic_error

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    """Everything the endpoints share (``app.state.pv``)."""

    model: Any
    registry: VectorRegistry
    batcher: Batcher
    limits: Limits
    token: Optional[str]
    model_name: str
    axis_name: Optional[str]
    default_max_tokens: int
    tok_lock: threading.Lock
    created: int
    _axis: Any = None
    _axis_error: Optional[str] = None
    _axis_tried: bool = False

    def axis(self) -> Any:
        """The assistant axis (a PersonaVector), or None when it is not available (reason in ``_axis_error``)."""
        if self._axis_tried or self.axis_name is None:
            return self._axis
        self._axis_tried = True
        try:
            self._axis = self.registry.get(self.axis_name, build=self.batcher.call_sync)
        except RequestError as err:
            self._axis_error = err.message
            log.warning("no assistant axis: %s", err.message)
        return self._axis


def error_response(field: str, message: str, status: int = 400) -> JSONResponse:
    """The one error shape: OpenAI's ``{"error": {...}}`` with ``param`` naming the field."""
    kind = {401: "authentication_error", 413: "invalid_request_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": f"{field}: {message}", "type": kind, "param": field, "code": status}},
                        status_code=status)


def create_app(
    model: Any,
    *,
    vectors_dir: Union[str, Path, None] = None,
    catalogue: CatalogueMode = "cached",
    axis: Optional[str] = AXIS_NAME,
    token: Optional[str] = None,
    limits: Limits = Limits(),
    window_ms: float = 10.0,
    default_max_tokens: int = 64,
    default_layer: Optional[int] = None,
    model_name: Optional[str] = None,
    allow_other_model: bool = False,
) -> FastAPI:
    """Build the server around an already loaded :class:`~persona_vectors.PersonaModel`.

    Args:
        vectors_dir: served vectors, one saved vector per sub-directory (the sub-directory name is the name).
        catalogue: ``"cached"`` (catalogue personas whose vectors are in the disk cache), ``"build"`` (build a
            missing one on first use: slow), ``"off"``.
        axis: name of the direction reported as ``persona_projection.axis`` and capped by the page's
            "stabilise" (looked up like a steering vector: directory first, then catalogue); ``None``: none.
        token: require ``Authorization: Bearer <token>`` on ``/v1/*``.
        window_ms: how long the gatherer waits for concurrent requests before running a batch.
        default_layer: layer used when a steering item names none and its vector has several (default: middle).
    """
    tok_lock = threading.Lock()
    registry = VectorRegistry(model, Path(vectors_dir) if vectors_dir is not None else None, catalogue,
                              allow_other_model, default_layer)
    batcher = Batcher(model, window_ms=window_ms, max_batch=limits.max_batch, tok_lock=tok_lock)
    state = ServerState(model, registry, batcher, limits, token, model_name or model.info.model_id, axis,
                        default_max_tokens, tok_lock, int(time.time()))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="persona-vectors serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.pv = state

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if request.url.path.startswith("/v1/") and token is not None:
            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                return error_response("authorization", "missing or wrong bearer token: send 'Authorization: "
                                      "Bearer <token>' with the server's --token", 401)
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
            return error_response("body", f"{size} bytes is over this server's limit of {limits.max_body_bytes}: "
                                  "send a shorter conversation", 413)
        return await call_next(request)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, err: RequestError) -> JSONResponse:
        return error_response(err.field, err.message, err.status)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page_html())

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.created,
                                            "owned_by": "persona-vectors", "n_layers": model.n_layers,
                                            "d_model": model.d_model}]}

    @app.get("/v1/steering/vectors")
    async def vectors() -> dict[str, Any]:
        return {"object": "list", "data": await asyncio.to_thread(registry.listing)}

    @app.get("/v1/steering/info")
    async def info() -> dict[str, Any]:
        ax = await asyncio.to_thread(state.axis)
        return {"model": state.model_name, "n_layers": model.n_layers, "default_layer": registry.default_layer,
                "axis": state.axis_name if ax is not None else None, "axis_error": state._axis_error,
                "axis_layers": list(ax.layers) if ax is not None else [], "catalogue": catalogue,
                "operators": _operators(), "limits": limits.__dict__, "batch_window_ms": window_ms}

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        return {**batcher.stats.to_json(), "pending": batcher.pending()}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        req = await _parse(request, ChatRequest, limits)
        check_limits(req, limits, default_max_tokens)
        msgs = [{"role": m.role, "content": m.text()} for m in req.messages]
        if req.system is not None:
            if msgs[0]["role"] == "system":
                raise RequestError("system", "the messages already start with a system message: drop one of them")
            msgs = [{"role": "system", "content": req.system}] + msgs
        if msgs[-1]["role"] == "assistant":
            raise RequestError("messages", "the last message is the assistant's: end with a user message")
        ids = _tokenize(state, lambda: model.chat_ids(msgs), "messages", req.new_tokens(default_max_tokens))
        return await _complete(state, req, [ids], chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        req = await _parse(request, CompletionRequest, limits)
        check_limits(req, limits, default_max_tokens)
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not prompts or any(not p for p in prompts):
            raise RequestError("prompt", "is empty: pass a non-empty string (or a list of them)")
        if len(prompts) * req.n > limits.max_n:
            raise RequestError("prompt", f"{len(prompts)} prompts x n={req.n} is over this server's limit of "
                               f"{limits.max_n} completions per request: send several requests")
        all_ids = [_tokenize(state, lambda p=p: model.with_bos(model.content_ids(p)), "prompt", req.new_tokens(default_max_tokens))
                   for p in prompts]
        return await _complete(state, req, all_ids, chat=False)

    return app


# ================================================================================================ helpers
def _operators() -> list[str]:
    from ..operators import operator_names

    return list(operator_names())


_PAGE: dict[str, str] = {}


def _page_html() -> str:
    """The chat page with plotly.js inlined (works offline), built once."""
    if "html" not in _PAGE:
        from plotly.offline import get_plotlyjs

        html = resources.files("persona_vectors.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        _PAGE["html"] = html.replace("<!--PLOTLY_JS-->", "<script>" + get_plotlyjs() + "</script>", 1)
    return _PAGE["html"]


async def _parse(request: Request, kind: Any, limits: Limits) -> Any:
    raw = await request.body()
    if len(raw) > limits.max_body_bytes:
        raise RequestError("body", f"{len(raw)} bytes is over this server's limit of {limits.max_body_bytes}: "
                           "send a shorter conversation", 413)
    try:
        obj = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError("body", f"malformed JSON ({err}): send a JSON object with Content-Type application/json")
    if not isinstance(obj, dict):
        raise RequestError("body", "must be a JSON object, e.g. {\"messages\": [...]} or {\"prompt\": \"...\"}")
    try:
        return kind.model_validate(obj)
    except ValidationError as err:
        raise pydantic_error(err) from None


def _tokenize(state: ServerState, fn: Any, field: str, new_tokens: int) -> list[int]:
    """Token ids under the tokenizer lock, checked against the prompt limit and the model's context."""
    try:
        with state.tok_lock:
            ids = list(fn())
    except ValueError as err:
        raise RequestError(field, str(err)) from None
    if len(ids) > state.limits.max_prompt_tokens:
        raise RequestError(field, f"the prompt is {len(ids)} tokens, over this server's limit of "
                           f"{state.limits.max_prompt_tokens}: shorten it (drop old turns)")
    try:
        state.model.check_length(len(ids), new_tokens=new_tokens)
    except ValueError as err:
        raise RequestError(field, str(err)) from None
    return ids


async def _resolve(state: ServerState, req: Any) -> list[ResolvedSpec]:
    """Resolve the request's steering items (slow parts, e.g. threshold 'auto', run on the model worker)."""
    if not req.steering:
        return []
    items = list(req.steering)
    run = state.batcher.call_sync
    return await asyncio.to_thread(lambda: [state.registry.resolve(it, run) for it in items])


async def _complete(state: ServerState, req: Any, prompts: list[list[int]], *, chat: bool) -> Any:
    limits, batcher = state.limits, state.batcher
    specs = await _resolve(state, req)
    n_rows = len(prompts) * req.n
    if batcher.pending() + n_rows > limits.max_pending:
        raise RequestError("n", f"the server has {batcher.pending()} completions waiting (limit "
                           f"{limits.max_pending}): retry shortly", 429)
    axis = await asyncio.to_thread(state.axis)
    axis_sites: tuple[Site, ...] = ()
    if axis is not None:
        wanted = {Site(int(state.registry.default_layer))} | {s for sp in specs for s in sp.sites}  # type: ignore[arg-type]
        axis_sites = tuple(sorted((s for s in wanted if s in axis.sites), key=lambda s: s.layer))
    max_tokens = req.new_tokens(state.default_max_tokens)
    rows = []
    for ids in prompts:
        for i in range(req.n):
            seed = None if req.seed is None else req.seed + i
            rows.append(Row(ids, max_tokens, req.temperature, req.top_p, seed, req.stops(), specs, axis_sites, axis))
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    meta = {"id": rid, "created": int(time.time()), "model": state.model_name}
    steering = [s.to_json() for s in specs]
    if req.stream:
        return _stream(batcher, rows, meta, steering, chat, sum(len(p) for p in prompts))
    try:
        results = await batcher.submit(rows)
    except ValueError as err:
        raise RequestError("steering" if specs else "body", str(err)) from None
    return _body(results, meta, steering, chat, sum(len(p) for p in prompts))


def _choice(r: RowResult, i: int, chat: bool) -> dict[str, Any]:
    c: dict[str, Any] = {"index": i, "finish_reason": r.finish_reason, "persona_projection": r.projection}
    if chat:
        c["message"] = {"role": "assistant", "content": r.text}
    else:
        c.update(text=r.text, logprobs=None)
    c["logprobs"] = None
    return c


def _body(results: list[RowResult], meta: dict[str, Any], steering: list[Any], chat: bool, n_prompt: int) -> dict[str, Any]:
    completion = sum(r.n_tokens for r in results)
    return {**meta, "object": "chat.completion" if chat else "text_completion",
            "choices": [_choice(r, i, chat) for i, r in enumerate(results)],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": completion, "total_tokens": n_prompt + completion},
            "steering": steering, "persona_projection": results[0].projection if results else None}


def _stream(batcher: Batcher, rows: list[Row], meta: dict[str, Any], steering: list[Any], chat: bool,
            n_prompt: int) -> StreamingResponse:
    """Server-sent events: one chunk per new text piece per choice, a final chunk per choice, ``[DONE]``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for i, r in enumerate(rows):
        r.on_text = (lambda i: lambda piece: loop.call_soon_threadsafe(queue.put_nowait, (i, piece)))(i)
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(i: int, piece: Optional[str], finish: Optional[str] = None, **extra: Any) -> str:
        if chat:
            delta: dict[str, Any] = {} if piece is None else {"content": piece}
            if piece == "" and finish is None:
                delta = {"role": "assistant", "content": ""}
            ch: dict[str, Any] = {"index": i, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            ch = {"index": i, "text": piece or "", "finish_reason": finish, "logprobs": None}
        ch.update(extra)
        return "data: " + json.dumps({**meta, "object": obj, "choices": [ch]}) + "\n\n"

    async def events() -> AsyncIterator[str]:
        task = asyncio.ensure_future(batcher.submit(rows))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        if chat:
            for i in range(len(rows)):
                yield chunk(i, "")
        while True:
            item = await queue.get()
            if item is None:
                break
            yield chunk(item[0], item[1])
        try:
            results = task.result()
        except Exception as err:  # noqa: BLE001  # headers are sent: report in-band
            yield "data: " + json.dumps({"error": {"message": str(err), "type": "invalid_request_error",
                                                   "param": "steering", "code": 400}}) + "\n\n"
            yield "data: [DONE]\n\n"
            return
        for i, r in enumerate(results):
            yield chunk(i, None if chat else "", r.finish_reason, persona_projection=r.projection)
        done = sum(r.n_tokens for r in results)
        yield "data: " + json.dumps({**meta, "object": obj, "choices": [], "steering": steering, "usage": {
            "prompt_tokens": n_prompt, "completion_tokens": done, "total_tokens": n_prompt + done}}) + "\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
