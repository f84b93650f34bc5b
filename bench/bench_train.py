"""Training throughput: tokens and characters per second of full optimizer steps (forward, backward, optimizer).

    python bench/bench_train.py                       # the course's size and the CPU profile, vocab 8192
    python bench/bench_train.py --chars_per_token 1.39 --steps 20 --sizes 6x512x8x256x8 4x256x4x512x8
    python bench/bench_train.py --sizes 8x512x8x512x32 12x768x12x1024x16 --dtypes bfloat16 --compile  # a GPU
    python bench/bench_train.py --sizes 6x256x4x256x4 --packed --dropout 0.1 --dtypes bfloat16
    python bench/bench_train.py --sizes 6x256x4x512x8 --dtypes float32 --optimizers adamw muon
    python bench/bench_train.py --sizes 6x256x4x512x8 --dtypes bfloat16 --loss_chunks 2048 256 --rounds 6
    python bench/bench_train.py --sizes 6x256x4x256x4 --packed --dropout 0.1 --optimizers adamw adamw_unfused --rounds 6

Random token ids (speed does not depend on the text); characters per second = tokens per second times the
characters per token your tokenizer gives (prepare.py prints it; meta.json has it). --packed adds document ids
(rows of 8 documents), as SFT batches have, --dropout the training dropout on the embeddings and block outputs and
--attn_dropout the one on the attention weights (the fourth example is the CPU SFT config's step: it has none),
--optimizers the optimizers to compare (train.py's `optimizer`: Muon orthogonalises each update in bf16, slow on
CPUs without bf16 units; `adamw_unfused` is torch's AdamW without its fused kernel, which train.py uses on the CPU
and CUDA), --loss_chunks the loss's chunk sizes to compare (rows of logits at a time: model.GPT's
cpu_bf16_loss_chunk_rows under bf16 on the CPU, loss_chunk_rows elsewhere). On CUDA it also prints the model FLOPs
utilisation (MFU).

A machine's speed drifts (other tenants, clocks) by more than small changes gain: --rounds N times every
configuration N times, taking turns, and prints each one's median and its range, so that the drift falls on all of
them alike. Compare configurations only within one call.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, GPTConfig, gpu_peak_flops  # noqa: E402


def training_step(n_layer, n_embd, n_head, vocab, block, batch, device, dtype, compile_model=False, packed=False,
                  dropout=0.0, attn_dropout=0.0, optimizer="adamw", loss_chunk_rows=None):
    """(model, step): one full optimizer step on random ids, as train.py takes it (bench/profile_cpu.py uses it too).
    step() returns the loss without waiting for the device."""
    torch.manual_seed(0)
    raw = GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                        dropout=dropout, attn_dropout=attn_dropout)).to(device)
    if loss_chunk_rows:
        raw.cpu_bf16_loss_chunk_rows = raw.loss_chunk_rows = loss_chunk_rows
    model = raw.compiled() if compile_model else raw
    # model.optimizers fuses AdamW on the CPU and CUDA only: any other device type gives the unfused one
    opts = raw.optimizers(optimizer.removesuffix("_unfused"), 1e-3, 0.1, (0.9, 0.95),
                          "unfused" if optimizer.endswith("_unfused") else device)
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


def timed_steps(step, steps, device):
    """Seconds that `steps` steps take, waiting for the device at both ends."""
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()  # waits for the device
    return time.perf_counter() - t0


def report(run, args, device):
    """One row of the table: the median round's rates, and the range of rounds when there were several."""
    n_layer, n_embd, n_head, block, batch = run["shape"]
    rates = sorted(batch * block * args.steps / t for t in run["seconds"])
    tps = statistics.median(rates)
    peak = gpu_peak_flops() if device == "cuda" else None
    mfu = run["raw"].flops_per_token(block) * tps / peak if peak else None
    spread = f"  ({rates[0]:,.0f}-{rates[-1]:,.0f} over {len(rates)} rounds)" if len(rates) > 1 else ""
    print(f"{f'{n_layer} x {n_embd} x {n_head}':>24} {block:>6} {batch:>6} {run['raw'].num_params() / 1e6:>8.2f}M "
          f"{run['dtype']:>9} {run['optimizer']:>13} {run['chunk'] or '-':>6} {tps:>10,.0f} "
          f"{tps * args.chars_per_token:>10,.0f} {f'{mfu:.1%}' if mfu else '-':>6}{spread}", flush=True)


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
    ap.add_argument("--optimizers", nargs="+", default=["adamw"], choices=["adamw", "adamw_unfused", "muon"])
    ap.add_argument("--loss_chunks", nargs="+", type=int, default=[], help="rows of logits at a time in the loss")
    ap.add_argument("--rounds", type=int, default=1, help="time every configuration this often, taking turns")
    args = ap.parse_args()
    if args.rounds < 1 or args.steps < 1:
        ap.error("--rounds and --steps must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    print(f"device {device}, {torch.get_num_threads()} threads, vocab {args.vocab_size}, compile {args.compile}, "
          f"packed {args.packed}, dropout {args.dropout}, attn_dropout {args.attn_dropout}")
    print(f"{'layers x width x heads':>24} {'block':>6} {'batch':>6} {'params':>9} {'dtype':>9} {'optimizer':>13} "
          f"{'chunk':>6} {'tokens/s':>10} {'chars/s':>10} {'MFU':>6}")
    runs = []  # with --rounds, every configuration built first, so that the rounds can take turns
    for s in args.sizes:
        n_layer, n_embd, n_head, block, batch = map(int, s.split("x"))
        for dtype in args.dtypes:
            for optimizer in args.optimizers:
                for chunk in args.loss_chunks or [None]:
                    raw, step = training_step(n_layer, n_embd, n_head, args.vocab_size, block, batch, device, dtype,
                                              args.compile, args.packed, args.dropout, args.attn_dropout, optimizer,
                                              chunk)
                    timed_steps(step, 3 if args.compile else 2, device)  # warm-up (and compilation)
                    run = dict(shape=(n_layer, n_embd, n_head, block, batch), dtype=dtype, optimizer=optimizer,
                               chunk=chunk, raw=raw, step=step, seconds=[])
                    if args.rounds == 1:  # one at a time, each model freed before the next is built
                        run["seconds"].append(timed_steps(step, args.steps, device))
                        report(run, args, device)
                    else:
                        runs.append(run)
    for _ in range(args.rounds):  # (runs is empty with one round: each was timed as it was built)
        for run in runs:
            run["seconds"].append(timed_steps(run["step"], args.steps, device))
    for run in runs:
        report(run, args, device)



if __name__ == "__main__":
    main()
