"""Generation speed: tokens per second and the time for 256 and 512 new tokens, with and without the KV cache.

    python bench/bench_generate.py                       # the CPU profile and the course's size, random weights
    python bench/bench_generate.py --out_dir out/sft     # a trained checkpoint

Batch of one, as in the chat; stop tokens are ignored so that every run makes exactly the tokens asked for.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from engine import Engine, SamplingParams  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402


def timed(engine, n, use_cache):
    params = SamplingParams(max_new_tokens=n, temperature=0.8, seed=0)
    t0 = time.perf_counter()
    out = engine.generate([[engine.tok.eot_id] + engine.tok.encode("郭靖")], params, use_cache=use_cache)[0]
    assert len(out) == n
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out_dir", help="a checkpoint; default: random weights at the sizes below")
    ap.add_argument("--sizes", nargs="+", default=["6x256x4", "6x512x8"], help="LAYERSxWIDTHxHEADS")
    ap.add_argument("--block_size", type=int, default=512)
    ap.add_argument("--no_baseline", action="store_true", help="skip the slow runs without the cache")
    args = ap.parse_args()
    engines = []
    if args.out_dir:
        engines.append((args.out_dir, Engine.from_checkpoint(args.out_dir, "cpu")))
    else:
        tok = Tokenizer.train(["郭靖和黄蓉在桃花岛上。"] * 50, 300)  # ids only; the vocabulary size is what matters
        for s in args.sizes:
            n_layer, n_embd, n_head = map(int, s.split("x"))
            torch.manual_seed(0)
            model = GPT(GPTConfig(vocab_size=8192, block_size=args.block_size, n_layer=n_layer, n_head=n_head,
                                  n_embd=n_embd))
            engines.append((f"{n_layer} x {n_embd} x {n_head}, vocab 8192", Engine(model, tok, {"task": "pretrain"})))
    print(f"cpu threads {torch.get_num_threads()}")
    print(f"{'model':<30}{'cache':>7}{'256 tokens':>12}{'512 tokens':>12}{'tokens/s':>10}")
    for name, engine in engines:
        engine.stop_ids = set()
        timed(engine, 8, True)  # warm-up
        for use_cache in ([True] if args.no_baseline else [True, False]):
            t256, t512 = timed(engine, 256, use_cache), timed(engine, 512, use_cache)
            print(f"{name:<30}{'yes' if use_cache else 'no':>7}{t256:>11.2f}s{t512:>11.2f}s{512 / t512:>10.1f}")


if __name__ == "__main__":
    main()
