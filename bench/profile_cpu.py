"""Where a training step's time goes on this CPU: matmul speed at the model's shapes, a torch.profiler table of a
pretraining step and of a packed SFT step, and the chunked loss at several chunk sizes.

    python bench/profile_cpu.py                            # the CPU profile's model (6 x 256, vocab 8192)
    python bench/profile_cpu.py --dtype bfloat16            # under bf16 autocast, as train.py runs where it pays
    python bench/profile_cpu.py --layers 2 --width 64 --vocab 512 --rows 64 --steps 1   # a quick look

GFLOP/s is 2·m·k·n over the best of three rounds; compare it with the CPU's peak (cores × FMA units × lanes × 2 ×
clock). Random token ids: the time does not depend on the text. The pretraining step puts every position in the
loss, as the corpus rows do; the SFT step packs eight documents a row with both dropouts, as configs/sft.py does.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_train import training_step  # noqa: E402  (this script's folder is on the path when run)
from model import GPT, GPTConfig, linear_cross_entropy  # noqa: E402


def best_seconds(fn, rounds=3, reps=5):
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def matmul_rates(rows, width, hidden, vocab, dtype):
    """GFLOP/s of x @ w^T (F.linear, as nn.Linear runs it) at the blocks' and the output layer's shapes."""
    for m, k, n in [(rows, width, width), (rows, width, hidden), (rows, hidden, width), (rows // 4, width, vocab)]:
        x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
        rate = 2 * m * k * n / best_seconds(lambda: F.linear(x, w)) / 1e9
        print(f"matmul ({m} x {k}) x ({k} x {n}) {str(dtype)[6:]}: {rate:.1f} GFLOP/s", flush=True)


def profile_steps(name, args, batch, block, packed, dropout, dtype):
    _, step = training_step(args.layers, args.width, args.heads, args.vocab, block, batch, "cpu", dtype,
                            packed=packed, dropout=dropout, attn_dropout=dropout)
    seconds = best_seconds(step, rounds=1, reps=args.steps)
    print(f"\n{name} step ({batch} x {block}): {seconds:.3f} s, {batch * block / seconds:,.0f} tokens/s", flush=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12), flush=True)


def loss_chunks(rows, width, vocab, chunks):
    """The output layer and cross-entropy, forward and backward, at several chunk sizes (the first is what float32
    and GPUs run, GPT.loss_chunk_rows; bf16 on the CPU runs GPT.cpu_bf16_loss_chunk_rows)."""
    h = torch.randn(rows, width, requires_grad=True)
    w = (torch.randn(vocab, width) * 0.02).requires_grad_()
    targets, weights = torch.randint(vocab, (rows,)), torch.ones(rows)
    for chunk in chunks:
        def run():
            linear_cross_entropy(h, w, targets, weights, chunk).backward()
            h.grad = w.grad = None
        print(f"loss over {rows} rows in chunks of {chunk}: {best_seconds(run, reps=2) * 1000:.0f} ms", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--rows", type=int, default=512, help="pretraining context; SFT rows are half as long")
    ap.add_argument("--steps", type=int, default=3, help="steps timed and profiled for each kind")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, capability "
          f"{torch.backends.cpu.get_cpu_capability()}", flush=True)
    hidden = GPTConfig(n_embd=args.width, n_head=args.heads).mlp_hidden
    matmul_rates(8 * args.rows, args.width, hidden, args.vocab, getattr(torch, args.dtype))
    profile_steps("pretraining", args, 8, args.rows, False, 0.0, args.dtype)
    profile_steps("packed SFT", args, 4, args.rows // 2, True, 0.1, args.dtype)
    print()
    chunks = [GPT.loss_chunk_rows, 1024, 512, GPT.cpu_bf16_loss_chunk_rows, 128]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
        loss_chunks(8 * args.rows, args.width, args.vocab, chunks)


if __name__ == "__main__":
    main()
