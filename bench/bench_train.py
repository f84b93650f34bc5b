"""Training throughput: tokens and characters per second of full optimizer steps (forward, backward, optimizer).

    python bench/bench_train.py                       # the course's size and the CPU profile, vocab 8192
    python bench/bench_train.py --chars_per_token 1.39 --steps 20 --sizes 6x512x8x256x8 4x256x4x512x8
    python bench/bench_train.py --sizes 8x512x8x512x32 12x768x12x1024x16 --dtypes bfloat16 --compile  # a GPU
    python bench/bench_train.py --sizes 6x256x4x256x4 --packed --dropout 0.1 --dtypes bfloat16
    python bench/bench_train.py --sizes 6x256x4x512x8 --dtypes float32 --optimizers adamw muon

Random token ids (speed does not depend on the text); characters per second = tokens per second times the
characters per token your tokenizer gives (prepare.py prints it; meta.json has it). --packed adds document ids
(rows of 8 documents), as SFT batches have, --dropout the training dropout on the embeddings and block outputs and
--attn_dropout the one on the attention weights (the fourth example is the CPU SFT config's step: it has none),
--optimizers the optimizers to compare (train.py's `optimizer`: Muon orthogonalises each update in bf16, slow on
CPUs without bf16 units). On CUDA it also prints the model FLOPs utilisation (MFU).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, GPTConfig, gpu_peak_flops  # noqa: E402


def training_step(n_layer, n_embd, n_head, vocab, block, batch, device, dtype, compile_model=False, packed=False,
                  dropout=0.0, attn_dropout=0.0, optimizer="adamw"):
    """(model, step): one full optimizer step on random ids, as train.py takes it (bench/profile_cpu.py uses it too).
    step() returns the loss without waiting for the device."""
    torch.manual_seed(0)
    raw = GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                        dropout=dropout, attn_dropout=attn_dropout)).to(device)
    model = raw.compiled() if compile_model else raw
    opts = raw.optimizers(optimizer, 1e-3, 0.1, (0.9, 0.95), device)
    x = torch.randint(vocab, (batch, block), device=device)
    y = torch.randint(vocab, (batch, block), device=device)
    doc = (torch.arange(block, device=device) * 8 // block).expand(batch, block) if packed else None
    w = torch.ones(batch, block, device=device) if packed else None

    def step():
        with torch.autocast(device, dtype=getattr(torch, dtype), enabled=dtype != "float32"):
            _, loss = model(x, y, w, doc_ids=doc)
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss
    return raw, step


def bench(n_layer, n_embd, n_head, vocab, block, batch, steps, device, dtype, compile_model, packed, dropout=0.0,
          attn_dropout=0.0, optimizer="adamw"):
    raw, step = training_step(n_layer, n_embd, n_head, vocab, block, batch, device, dtype, compile_model, packed,
                              dropout, attn_dropout, optimizer)
    warmup = 3 if compile_model else 2
    for i in range(steps + warmup):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = step()
    loss.item()  # waits for the device
    dt = time.perf_counter() - t0
    tps = batch * block * steps / dt
    peak = gpu_peak_flops() if device == "cuda" else None
    return raw.num_params(), tps, raw.flops_per_token(block) * tps / peak if peak else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["6x512x8x256x8", "6x256x4x512x8"],
                    help="LAYERSxWIDTHxHEADSxBLOCKxBATCH")
    ap.add_argument("--vocab_size", type=int, default=8192)
    ap.add_argument("--chars_per_token", type=float, default=1.39, help="of your tokenizer on your text")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="autocast dtypes to compare")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--packed", action="store_true", help="document-masked attention, as in SFT batches")
    ap.add_argument("--dropout", type=float, default=0.0, help="training dropout on embeddings and block outputs")
    ap.add_argument("--attn_dropout", type=float, default=0.0, help="training dropout on the attention weights")
    ap.add_argument("--optimizers", nargs="+", default=["adamw"], choices=["adamw", "muon"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    print(f"device {device}, {torch.get_num_threads()} threads, vocab {args.vocab_size}, compile {args.compile}, "
          f"packed {args.packed}, dropout {args.dropout}, attn_dropout {args.attn_dropout}")
    print(f"{'layers x width x heads':>24} {'block':>6} {'batch':>6} {'params':>9} {'dtype':>9} {'optimizer':>9} "
          f"{'tokens/s':>10} {'chars/s':>10} {'MFU':>6}")
    for s in args.sizes:
        n_layer, n_embd, n_head, block, batch = map(int, s.split("x"))
        for dtype in args.dtypes:
            for optimizer in args.optimizers:
                n, tps, mfu = bench(n_layer, n_embd, n_head, args.vocab_size, block, batch, args.steps, device, dtype,
                                    args.compile, args.packed, args.dropout, args.attn_dropout, optimizer)
                print(f"{f'{n_layer} x {n_embd} x {n_head}':>24} {block:>6} {batch:>6} {n / 1e6:>8.2f}M {dtype:>9} "
                      f"{optimizer:>9} {tps:>10,.0f} {tps * args.chars_per_token:>10,.0f} "
                      f"{f'{mfu:.1%}' if mfu else '-':>6}", flush=True)


if __name__ == "__main__":
    main()
