"""Export time and server latency: export_hf.py and serve.py on a model of the CPU profile's size.

    python bench/bench_serve.py                  # random weights, 6 layers x 256, 4 heads, context 512, vocab 8192
    python bench/bench_serve.py --max_tokens 64 --clients 1 4

The tokenizer is trained on the default corpus (data/jinyong/corpus, as prepare.py does) and the model's weights
are random: speed does not depend on what the model knows. Also checks that the exported tokenizer gives MiniGLM's
ids on every line of that corpus. Each client streams chat replies of up to --max_tokens new tokens (random weights
seldom end a reply early); time to first token is from sending the request to its first text chunk.
"""
import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from checkpoint import save_checkpoint  # noqa: E402
from engine import Engine, SamplingParams  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402


QUESTION = [{"role": "user", "content": "郭靖的师父是谁？"}]


def engine_once(engine, seed, max_tokens):
    """The same reply from Engine in this process, no server: the reference for the server's overhead. It runs
    in a worker thread, as the server's generations do (on a busy machine torch ran several times faster there
    than in the main thread)."""
    result = []

    def work():
        t0, first = time.perf_counter(), None
        for _ in engine.stream(QUESTION, SamplingParams(max_new_tokens=max_tokens, temperature=1.0, seed=seed)):
            first = first or time.perf_counter() - t0
        result.append((first, time.perf_counter() - t0, engine.last_stats["tokens"]))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return result[0]


def stream_once(client, seed, max_tokens):
    """(seconds to the first text chunk, seconds in all, new tokens) of one streamed chat reply."""
    t0 = time.perf_counter()
    first, tokens = None, 0
    for chunk in client.chat.completions.create(
            model="bench", messages=QUESTION, stream=True, seed=seed,
            temperature=1.0, max_tokens=max_tokens, stream_options={"include_usage": True}):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return first, time.perf_counter() - t0, tokens


def run_clients(client, n, max_tokens, seed0):
    results = [None] * n

    def work(i):
        results[i] = stream_once(client, seed0 + i, max_tokens)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max_tokens", type=int, default=128)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=5, help="repetitions of each setting")
    ap.add_argument("--port", type=int, default=8391)
    args = ap.parse_args()
    import httpx
    import openai

    corpus = sorted(glob.glob(os.path.join(REPO, "data", "jinyong", "corpus", "*.txt")))
    texts = [open(p, encoding="utf-8").read() for p in corpus]
    tok = Tokenizer.train(texts, 8192)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=8192, block_size=512, n_layer=6, n_head=4, n_embd=256))
    print(f"cpu threads {torch.get_num_threads()}; model {model.num_params() / 1e6:.1f}M parameters, random weights")
    with tempfile.TemporaryDirectory() as work:
        save_checkpoint(os.path.join(work, "out", "bench", "best"), model, tok, {"task": "sft"})
        t0 = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(REPO, "export_hf.py"), "--out_dir",
                        os.path.join(work, "out", "bench"), "--output", os.path.join(work, "hf")], check=True)
        export_s = time.perf_counter() - t0
        engine = Engine.from_checkpoint(os.path.join(work, "out", "bench"), "cpu")
        engine_once(engine, 0, 16)  # warm-up
        server = subprocess.Popen([sys.executable, os.path.join(REPO, "serve.py"), "--root", os.path.join(work, "out"),
                                   "--port", str(args.port)], stdout=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{args.port}"
            while True:
                try:
                    httpx.get(url + "/health", timeout=2)
                    break
                except httpx.TransportError:
                    if server.poll() is not None:
                        raise SystemExit("serve.py did not start")
                    time.sleep(0.2)
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
            run_clients(client, 1, 16, 0)  # warm-up: loads the model
            # rounds interleave the settings, so that a busy spell of the machine touches all of them alike
            runs = {n: ([], [], []) for n in [0] + args.clients}  # 0: Engine alone
            short = 0
            for r in range(args.rounds):
                for n, (firsts, rates, totals) in runs.items():
                    t0 = time.perf_counter()
                    results = [engine_once(engine, 1000 * r, args.max_tokens)] if n == 0 else \
                        run_clients(client, n, args.max_tokens, 1000 * r)
                    wall = time.perf_counter() - t0
                    firsts += [f for f, _, _ in results if f is not None]  # None: ended before any text
                    short += sum(t < args.max_tokens for _, _, t in results)
                    rates += [t / s for _, s, t in results]
                    totals.append(sum(t for _, _, t in results) / wall)
        finally:
            server.terminate()
            server.wait()
        from transformers import AutoTokenizer  # only now: a lighter process while timing
        hf = AutoTokenizer.from_pretrained(os.path.join(work, "hf"))
        lines = [line for text in texts for line in text.splitlines() if line]
        same = sum(hf(line, add_special_tokens=False, split_special_tokens=True)["input_ids"] == tok.encode(line)
                   for line in lines)
        print(f"exported tokenizer: the same ids as MiniGLM's on {same} of {len(lines)} corpus lines "
              f"({sum(map(len, lines)):,} characters)")
    print(f"\nexport_hf.py (command line, with its check): {export_s:.1f} s")
    print("\n| clients | first token, median | first token, slowest | tokens/s per client | tokens/s, all clients |")
    print("|---|---|---|---|---|")
    for n, (firsts, rates, totals) in runs.items():
        name = "Engine alone, no server" if n == 0 else f"{n} streaming"
        print(f"| {name} | {statistics.median(firsts) * 1000:.0f} ms | {max(firsts) * 1000:.0f} ms | "
              f"{statistics.median(rates):.0f} | {statistics.median(totals):.0f} |")
    replies = args.rounds * (1 + sum(args.clients))
    print(f"\n{short} of {replies} replies ended before {args.max_tokens} tokens (random weights drew an end token)")

if __name__ == "__main__":
    main()
