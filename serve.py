"""An OpenAI-compatible HTTP server over the engine, for chat clients, the openai package, curl and the like.

    python serve.py                                      # http://127.0.0.1:8000/v1, the checkpoints under out/
    python serve.py --root out --port 8000 --host 0.0.0.0 --api_key SECRET     # other machines, with a key

POST /v1/chat/completions   a chat (SFT) checkpoint answers the messages
POST /v1/completions        any checkpoint continues the prompt (a chat checkpoint takes it as the user's message)
GET  /v1/models             the runs under --root; a request's "model" picks one of them by name
GET  /health                {"status": "ok", "generating": replies in progress, "generated_tokens": since start}
Sampling: temperature, top_p, max_tokens (or max_completion_tokens), stop, seed, and beyond OpenAI's fields
top_k and repetition_penalty; what a request leaves out takes MiniGLM's defaults. "stream": true sends OpenAI's
chunks as server-sent events; stream_options.include_usage adds the token counts. Bad requests get OpenAI's JSON
errors (400, 401, 404), never a traceback. Requests are answered concurrently, each in its own thread; a client that
disconnects mid-stream stops its generation.
"""
import argparse
import hmac
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from checkpoint import CheckpointError, find_checkpoint, read_info
from engine import Engine, SamplingParams, utf8_pieces
from errors import UserError, run_main
from model import pick_device
from tokenizer import ROLE_TOKENS, TokenizerError

MAX_TOKENS_LIMIT = 4096     # the most new tokens one request may ask for
MAX_BODY_BYTES = 1 << 20
MAX_STOP_STRINGS = 4        # as OpenAI
UNSUPPORTED = {"n": 1, "best_of": 1, "echo": False, "suffix": None, "logprobs": None, "top_logprobs": None,
               "tools": None, "functions": None, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": None}
DONE = object()


class ApiError(Exception):
    """A request the server refuses: OpenAI's error object with an HTTP status."""

    def __init__(self, status, message, param=None, code=None, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self):
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status)


# ---- request fields --------------------------------------------------------------------------------------------
def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    return (is_int(v) or isinstance(v, float)) and v == v and abs(v) != float("inf")


FIELDS = {  # name: (check, what it expects)
    "temperature": (lambda v: is_number(v) and 0 <= v <= 2, "a number from 0 to 2"),
    "top_p": (lambda v: is_number(v) and 0 < v <= 1, "a number above 0 and at most 1"),
    "top_k": (lambda v: is_int(v) and v >= 0, "an integer, 0 (off) or more"),
    "repetition_penalty": (lambda v: is_number(v) and 0 < v <= 10, "a number above 0 and at most 10 (1 = off)"),
    "max_tokens": (lambda v: is_int(v) and 1 <= v <= MAX_TOKENS_LIMIT, f"an integer from 1 to {MAX_TOKENS_LIMIT}"),
    "max_completion_tokens": (lambda v: is_int(v) and 1 <= v <= MAX_TOKENS_LIMIT,
                              f"an integer from 1 to {MAX_TOKENS_LIMIT}"),
    "seed": (is_int, "an integer"),
    "stream": (lambda v: isinstance(v, bool), "true or false"),
    "model": (lambda v: isinstance(v, str), "a string"),
}


def field(body, name, default):
    value = body.get(name)
    if value is None:
        return default
    ok, expected = FIELDS[name]
    if not ok(value):
        raise ApiError(400, f"'{name}': expected {expected}, got {json.dumps(value)[:80]}", param=name)
    return value


def sampling(body):
    """SamplingParams, stop strings, stream flag and include_usage from a request body."""
    for name, neutral in UNSUPPORTED.items():
        if body.get(name) not in (None, neutral):
            raise ApiError(400, f"'{name}' is not supported by this server (only {json.dumps(neutral)})", param=name)
    defaults = SamplingParams()
    max_tokens = field(body, "max_completion_tokens", field(body, "max_tokens", defaults.max_new_tokens))
    try:
        params = SamplingParams(max_new_tokens=max_tokens, top_k=field(body, "top_k", defaults.top_k),
                                temperature=field(body, "temperature", defaults.temperature),
                                top_p=field(body, "top_p", defaults.top_p), seed=field(body, "seed", None),
                                repetition_penalty=field(body, "repetition_penalty", defaults.repetition_penalty))
    except UserError as e:  # Engine's own range check, should it be stricter than the one above
        raise ApiError(400, str(e)) from None
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOP_STRINGS or \
            not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"'stop': expected a non-empty string or a list of at most {MAX_STOP_STRINGS} of them",
                       param="stop")
    stream = field(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict)):
        raise ApiError(400, "'stream_options': expected an object, and only with \"stream\": true",
                       param="stream_options")
    return params, stops, stream, bool((options or {}).get("include_usage"))


def message_list(body):
    """The messages as {"role", "content"} with content a string (OpenAI's text parts are joined)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages': expected a non-empty list of {\"role\", \"content\"} objects",
                       param="messages")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"'{where}': expected an object with 'role' and 'content'", param=where)
        role, content = m.get("role"), m.get("content")
        if role not in ROLE_TOKENS:
            raise ApiError(400, f"'{where}.role': unknown role {json.dumps(role)}; expected one of "
                                f"{', '.join(ROLE_TOKENS)}", param=f"{where}.role")
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and
                                             isinstance(p.get("text"), str) for p in content):
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(400, f"'{where}.content': expected a string (or a list of text parts)",
                           param=f"{where}.content")
        out.append({"role": role, "content": content})
    return out


# ---- generation ------------------------------------------------------------------------------------------------
class StopStrings:
    """Cuts the reply before the first stop string. Text that could be the start of one is held back until the
    next piece says whether it is."""

    def __init__(self, stops):
        self.stops, self.held = stops, ""

    def feed(self, piece):
        """(text that is safe to send, whether a stop string was found)."""
        text = self.held + piece
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.held = ""
            return text[:min(found)], True
        keep = max((k for s in self.stops for k in range(1, min(len(s), len(text) + 1)) if text.endswith(s[:k])),
                   default=0)
        self.held = text[len(text) - keep:]
        return text[:len(text) - keep], False


class Generation:
    """One reply: pieces() yields its text while Engine generates it; afterwards finish_reason ('stop' or
    'length') and completion_tokens (the stop token counted) say how it ended."""

    def __init__(self, server, engine, prompt_ids, params, stops):
        self.server, self.engine, self.prompt_ids, self.params = server, engine, prompt_ids, params
        self.stops = StopStrings(stops)
        self.finish_reason, self.completion_tokens = "length", 0

    def _tokens(self):
        for step in self.engine.generate_tokens([self.prompt_ids], self.params):
            token = step[0]
            if token is None:
                return
            self.completion_tokens += 1
            self.server.count_token()
            if token in self.engine.stop_ids:  # Engine's stop set: the end of a turn, a role token, <|endoftext|>
                self.finish_reason = "stop"
                return
            yield token

    def pieces(self):
        self.server.generating_changed(+1)
        try:
            for piece in utf8_pieces(self.engine.tok, self._tokens()):
                text, stopped = self.stops.feed(piece)
                if text:
                    yield text
                if stopped:
                    self.finish_reason = "stop"
                    return
            if self.stops.held:
                yield self.stops.held
        finally:  # also when the client went away and the stream was closed: generation stops here
            self.server.generating_changed(-1)

    def usage(self):
        n = len(self.prompt_ids)
        return {"prompt_tokens": n, "completion_tokens": self.completion_tokens,
                "total_tokens": n + self.completion_tokens}


# ---- the server ------------------------------------------------------------------------------------------------
class ModelServer:
    """The checkpoints under root, the engines loaded (the max_loaded most recently used), and counters."""

    def __init__(self, root="out", default=None, device="auto", max_loaded=2):
        self.root, self.default, self.device, self.max_loaded = root, default, device, max_loaded
        self.engines, self.lock = OrderedDict(), threading.Lock()
        self.generating, self.generated_tokens, self.count_lock = 0, 0, threading.Lock()

    def models(self):
        """{name: checkpoint folder} for the runs under root whose real path stays under root, chat models first."""
        real_root = os.path.realpath(self.root)
        found = []
        if os.path.isdir(self.root):
            for name in sorted(os.listdir(self.root)):
                if name.startswith(".") or name.endswith((".tmp", ".old")):
                    continue
                try:
                    folder = find_checkpoint(os.path.join(self.root, name))
                except CheckpointError:
                    continue
                if os.path.commonpath([real_root, os.path.realpath(folder)]) != real_root:
                    continue  # a link that leads outside root
                found.append((name, folder))
        return dict(sorted(found, key=lambda nf: not nf[0].startswith("sft")))

    def resolve(self, name):
        models = self.models()
        name = name or self.default or next(iter(models), None)
        if name not in models:
            listed = ", ".join(models) or f"none: train one, it appears under {self.root}/"
            raise ApiError(404, f"The model {json.dumps(name)} does not exist (models: {listed})", param="model",
                           code="model_not_found")
        return name, models[name]

    def engine(self, folder):
        """The engine for a checkpoint folder, loaded once; a checkpoint saved again since is loaded afresh."""
        key = (os.path.realpath(folder), os.stat(os.path.join(folder, "model.safetensors")).st_mtime_ns)
        with self.lock:
            if key not in self.engines:
                self.engines[key] = Engine.from_checkpoint(folder, self.device)
                while len(self.engines) > self.max_loaded:
                    self.engines.popitem(last=False)
            self.engines.move_to_end(key)
            return self.engines[key]

    def count_token(self):
        with self.count_lock:
            self.generated_tokens += 1

    def generating_changed(self, delta):
        with self.count_lock:
            self.generating += delta


async def read_body(request):
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def sse(data):
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def build_app(root="out", default=None, device="auto", api_key=None, max_loaded=2):
    server = ModelServer(root, default, device, max_loaded)
    app = FastAPI(title="MiniGLM", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def api_error(request, e):
        return e.response()

    @app.exception_handler(HTTPException)
    async def http_error(request, e):  # unknown paths and methods, in OpenAI's shape too
        return ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}").response()

    @app.exception_handler(Exception)
    async def server_error(request, e):  # a bug: the traceback goes to the server's log, not to the client
        return ApiError(500, f"internal server error ({type(e).__name__})", kind="server_error").response()

    def require_key(request: Request):
        given = request.headers.get("authorization", "")
        if api_key and not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(401, "Incorrect API key provided: send it as 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    async def engine_for(body):
        name, folder = server.resolve(field(body, "model", None))
        try:
            return name, await run_in_threadpool(server.engine, folder)
        except (UserError, OSError) as e:  # a damaged checkpoint, or one being replaced right now
            raise ApiError(500, f"model {name!r} could not be loaded: {e}", kind="server_error") from None

    async def answer(engine, name, prompt_ids, options, chat):
        params, stops, stream, include_usage = options
        gen = Generation(server, engine, prompt_ids, params, stops)
        rid, created = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                "model": name}
        if not stream:
            text = await run_in_threadpool(lambda: "".join(gen.pieces()))
            choice = {"index": 0, "message": {"role": "assistant", "content": text}} if chat else \
                {"index": 0, "text": text}
            choice.update(logprobs=None, finish_reason=gen.finish_reason)
            return JSONResponse({**head, "choices": [choice], "usage": gen.usage()})

        head["object"] = "chat.completion.chunk" if chat else "text_completion"

        def chunk(content=None, finish=None, role=False):
            if chat:
                delta = {"role": "assistant", "content": ""} if role else {} if content is None else \
                    {"content": content}
                c = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                c = {"index": 0, "text": content or "", "logprobs": None, "finish_reason": finish}
            return sse({**head, "choices": [c], **({"usage": None} if include_usage else {})})

        async def events():
            pieces = gen.pieces()
            try:
                if chat:
                    yield chunk(role=True)
                while (piece := await run_in_threadpool(next, pieces, DONE)) is not DONE:
                    yield chunk(piece)
                yield chunk(finish=gen.finish_reason)
                if include_usage:
                    yield sse({**head, "choices": [], "usage": gen.usage()})
                yield "data: [DONE]\n\n"
            finally:  # normal end, or the client disconnected (this task was cancelled): stop generating
                pieces.close()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @v1.post("/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        messages, options = message_list(body), sampling(body)
        name, engine = await engine_for(body)
        if not engine.is_chat:
            raise ApiError(400, f"the model {name!r} is a pretraining checkpoint (a text completer), not a chat "
                                "model: use /v1/completions", param="model")
        try:
            prompt_ids = engine.prompt_ids(messages, options[0])
        except TokenizerError as e:  # a system message longer than the room the context leaves for the prompt
            raise ApiError(400, f"'messages': {e}", param="messages", code="context_length_exceeded") from None
        return await answer(engine, name, prompt_ids, options, chat=True)

    @v1.post("/completions")
    async def completions(request: Request):
        body = await read_body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ApiError(400, "'prompt': expected a string", param="prompt")
        options = sampling(body)
        name, engine = await engine_for(body)
        return await answer(engine, name, engine.prompt_ids(prompt, options[0]), options, chat=False)

    @v1.get("/models")
    async def models():
        data = []
        for name, folder in server.models().items():
            try:
                task = read_info(folder).get("task")
            except CheckpointError:
                continue
            data.append({"id": name, "object": "model", "created": int(os.path.getmtime(folder)),
                         "owned_by": "miniglm", "task": task})
        return {"object": "list", "data": data}

    app.include_router(v1)

    @app.get("/health")
    async def health():
        return {"status": "ok", "generating": server.generating, "generated_tokens": server.generated_tokens}

    return app


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="out", help="folder whose runs are served, by name (out/sft is 'sft')")
    ap.add_argument("--model", default=None, help="the run a request without 'model' gets (default: the first)")
    ap.add_argument("--host", default="127.0.0.1", help="0.0.0.0 serves other machines too (set --api_key then)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api_key", default=os.environ.get("MINIGLM_API_KEY"),
                    help="require 'Authorization: Bearer KEY' (default: $MINIGLM_API_KEY; none if unset)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max_loaded", type=int, default=2, help="models kept in memory at once")
    args = ap.parse_args()
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: expected 1 to 65535")
    pick_device(args.device)  # a device this machine lacks is one line now, not a 500 on every request
    import uvicorn
    app = build_app(args.root, args.model, args.device, args.api_key, max(1, args.max_loaded))
    names = list(app.state.server.models())
    if args.model and args.model not in names:
        raise UserError(f"--model {args.model}: no such run under {args.root}/ (there: {', '.join(names) or 'none'})")
    try:  # a port in use is one line, not uvicorn's log
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise UserError(f"cannot listen on {args.host}:{args.port} ({reason}); choose another --port") from None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: serving on {args.host} without --api_key: anyone who reaches the port can use it",
              file=sys.stderr)
    print(f"MiniGLM OpenAI-compatible API: http://{args.host}:{args.port}/v1 "
          f"(models: {', '.join(names) or f'none yet under {args.root}/'})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    run_main(main)
