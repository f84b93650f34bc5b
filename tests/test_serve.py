"""serve.py: the OpenAI-compatible server, driven by the official openai client, raw HTTP and the command line."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch

from conftest import REPO, free_port

openai = pytest.importorskip("openai")

QUESTION = [{"role": "user", "content": "郭靖的师父是谁？"}]
GREEDY = {"temperature": 0, "max_tokens": 40, "extra_body": {"repetition_penalty": 1.0}}


@pytest.fixture(scope="module")
def root(trained, tmp_path_factory):
    """A served folder: the tiny SFT and pretraining runs, and 'endless', a model that never ends a reply (its
    output layer is zero, so greedy decoding repeats token 0), plus a link that leads outside the folder."""
    from checkpoint import load_checkpoint, save_checkpoint
    from model import GPT, GPTConfig
    base = tmp_path_factory.mktemp("serve")
    out = base / "out"
    for name in ("sft", "pre"):
        shutil.copytree(trained / "out" / name / "best", out / name / "best")
    _, tok, _, _ = load_checkpoint(str(out / "pre"))
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32,
                          tie_embeddings=False))
    with torch.no_grad():
        model.lm_head.weight.zero_()
    save_checkpoint(str(out / "endless" / "best"), model, tok, {"task": "pretrain"})
    shutil.copytree(trained / "out" / "sft" / "best", base / "elsewhere" / "best")
    os.symlink(base / "elsewhere", out / "linked")
    return out


@pytest.fixture(scope="module")
def server(root):
    """serve.build_app under uvicorn in a thread of this process, so that tests can read its counters."""
    import uvicorn
    from serve import build_app
    app = build_app(str(root), device="cpu")
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def engine_reply(root, name, messages_or_text, **params):
    from engine import Engine, SamplingParams
    return Engine.from_checkpoint(str(root / name), "cpu").reply(messages_or_text, SamplingParams(**params))


def test_models_are_the_runs_under_root(client):
    assert [m.id for m in client.models.list().data] == ["sft", "endless", "pre"]  # 'linked' leads outside


def test_chat_completion_is_the_engines_reply(client, root):
    r = client.chat.completions.create(model="sft", messages=QUESTION, **GREEDY)
    expected = engine_reply(root, "sft", QUESTION, temperature=0, max_new_tokens=40, repetition_penalty=1.0)
    assert r.choices[0].message.content == expected and expected
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason in ("stop", "length")
    from tokenizer import Tokenizer, render_for_reply
    tok = Tokenizer.load(str(root / "sft" / "best" / "tokenizer.json"))
    assert r.usage.prompt_tokens == len(render_for_reply(tok, QUESTION, 10 ** 6))
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > r.usage.prompt_tokens


def test_streamed_chat_equals_the_whole_reply(client):
    whole = client.chat.completions.create(model="sft", messages=QUESTION, **GREEDY)
    chunks = list(client.chat.completions.create(model="sft", messages=QUESTION, stream=True,
                                                 stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens and not chunks[-1].choices
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"


def test_completions_continue_a_pretraining_checkpoint(client, root):
    r = client.completions.create(model="pre", prompt="郭靖", temperature=0, max_tokens=20,
                                  extra_body={"repetition_penalty": 1.0})
    expected = engine_reply(root, "pre", "郭靖", temperature=0, max_new_tokens=20, repetition_penalty=1.0)
    assert r.choices[0].text == expected and r.usage.prompt_tokens == 2  # <|endoftext|> 郭靖
    streamed = client.completions.create(model="pre", prompt="郭靖", temperature=0, max_tokens=20, stream=True,
                                         extra_body={"repetition_penalty": 1.0})
    assert "".join(c.choices[0].text for c in streamed) == expected


def test_stop_strings_and_max_tokens(client):
    reply = client.chat.completions.create(model="sft", messages=QUESTION, **GREEDY).choices[0].message.content
    stop = reply[3:5]  # cut inside the reply, whatever the tiny model says
    r = client.chat.completions.create(model="sft", messages=QUESTION, stop=[stop, "不会出现的字"], **GREEDY)
    assert r.choices[0].message.content == reply[:reply.index(stop)] and r.choices[0].finish_reason == "stop"
    chunks = client.chat.completions.create(model="sft", messages=QUESTION, stop=stop, stream=True, **GREEDY)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply[:reply.index(stop)]
    r = client.completions.create(model="endless", prompt="郭靖", temperature=0, max_tokens=7)
    assert (r.choices[0].finish_reason, r.usage.completion_tokens, len(r.choices[0].text)) == ("length", 7, 7)


def test_bad_requests_get_openai_errors(server):
    url = server[0]
    ok_chat = {"model": "sft", "messages": QUESTION}
    cases = [("/v1/chat/completions", b"{not json", 400, None),
             ("/v1/chat/completions", [1, 2], 400, None),
             ("/v1/chat/completions", {"model": "sft"}, 400, "messages"),
             ("/v1/chat/completions", {**ok_chat, "messages": [{"role": "tool", "content": "x"}]}, 400,
              "messages[0].role"),
             ("/v1/chat/completions", {**ok_chat, "messages": [{"role": "user", "content": 3}]}, 400,
              "messages[0].content"),
             ("/v1/chat/completions", {**ok_chat, "temperature": "hot"}, 400, "temperature"),
             ("/v1/chat/completions", {**ok_chat, "temperature": True}, 400, "temperature"),
             ("/v1/chat/completions", {**ok_chat, "top_p": 0}, 400, "top_p"),
             ("/v1/chat/completions", {**ok_chat, "max_tokens": 0}, 400, "max_tokens"),
             ("/v1/chat/completions", {**ok_chat, "n": 2}, 400, "n"),
             ("/v1/chat/completions", {**ok_chat, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
             ("/v1/chat/completions", {**ok_chat, "model": "pre"}, 400, "model"),
             ("/v1/chat/completions", {**ok_chat, "model": "nope"}, 404, "model"),
             ("/v1/chat/completions", {**ok_chat, "model": "linked"}, 404, "model"),
             ("/v1/chat/completions", {**ok_chat, "model": "../out/sft"}, 404, "model"),
             # a system message longer than the room the tiny model's context leaves for the prompt
             ("/v1/chat/completions", {**ok_chat, "messages": [{"role": "system", "content": "你是熟悉小说的助手。" * 40},
                                                              *QUESTION]}, 400, "messages"),
             ("/v1/completions", {"model": "pre", "prompt": 5}, 400, "prompt"),
             ("/v1/nothing", {}, 404, None)]
    for path, body, status, param in cases:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(url + path, content=content, headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == status, (path, body, r.text)
        error = r.json()["error"]
        assert error["message"] and error["type"] == "invalid_request_error" and error["param"] == param, error
        assert "Traceback" not in r.text
    assert httpx.get(url + "/v1/models").status_code == 200
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model="nope", messages=QUESTION)


def test_eight_concurrent_streams_all_finish(client, root):
    """Each stream gets its own seeded reply, the one the engine gives alone: nothing mixes between requests."""
    results = {}

    def ask(seed):
        stream = client.chat.completions.create(model="sft", messages=QUESTION, stream=True, temperature=1.0,
                                                max_tokens=24, seed=seed)
        chunks = list(stream)
        results[seed] = ("".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
                         [c.choices[0].finish_reason for c in chunks if c.choices][-1])

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == list(range(8))
    for seed, (text, finish) in results.items():
        assert finish in ("stop", "length")
        assert text == engine_reply(root, "sft", QUESTION, temperature=1.0, max_new_tokens=24, seed=seed)


def test_a_client_that_disconnects_stops_its_generation(client, server):
    state = server[1].state.server
    before = state.generated_tokens
    stream = client.completions.create(model="endless", prompt="郭靖", temperature=0, max_tokens=4000, stream=True)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    deadline = time.time() + 20
    while state.generating and time.time() < deadline:
        time.sleep(0.05)
    assert state.generating == 0
    assert state.generated_tokens - before < 1000  # 'endless' would have made 4000


def test_command_line_binds_localhost_and_requires_the_key(root):
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "serve.py"), "--root", str(root), "--port",
                             str(port), "--api_key", "s3cret"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in first and "sft" in first, first
        url = f"http://127.0.0.1:{port}/v1/models"
        deadline = time.time() + 60
        while True:
            try:
                r = httpx.get(url, timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.time() < deadline
                time.sleep(0.2)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        keyed = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="s3cret", max_retries=0)
        assert "sft" in [m.id for m in keyed.models.list().data]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope", max_retries=0).models.list()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_stop_strings_are_found_across_pieces():
    from serve import StopStrings
    s = StopStrings(["靖是谁", "!"])
    assert s.feed("郭靖") == ("郭", False)  # "靖" may begin a stop string: held back
    assert s.feed("是") == ("", False)
    assert s.feed("谁？") == ("", True)
    s = StopStrings(["靖x"])
    assert [s.feed(p) for p in ("郭靖", "是")] == [("郭", False), ("靖是", False)]
