"""A character-level baseline for pretraining on your own novels: held-out bits per character against minutes.

    python prepare.py --dataset novels --input ../shared/corpus/*.txt
    python train.py config/pretrain.py --dataset=novels --sft_mix=0 --max_iters=0 --max_seconds=600 \\
        --eval_interval=25 --out_dir=out/bpc/bpe --overwrite=True
    python bench/char_baseline.py ../shared/corpus/*.txt --minutes 10 --compare out/bpc/bpe/log.jsonl \\
        --output out/bpc/char
    python bench/char_baseline.py ../shared/corpus/*.txt --replot --output out/bpc/char --compare A/log.jsonl B/log.jsonl

The baseline is what the issue compared against: a small character-level GPT (one token per character, as
nanoGPT's shakespeare_char) trained for the same minutes on the same text, validated on the same held-out tails
(prepare.py's split). Both sides count training seconds only (evaluations excluded) and evaluate on random
windows of the validation text. Writes OUTPUT/curve.json and, with --compare, OUTPUT/bpc.png with both curves.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_utils import list_text_files, read_text_file, split_document  # noqa: E402
from fsutil import atomic_write  # noqa: E402
from model import GPT, GPTConfig, cpu_has_native_bf16  # noqa: E402


def char_ids(paths, val_fraction):
    """Train and validation character ids (each document's tail is validation, as prepare.py splits it); a
    character that never occurs in training maps to one 'unknown' id."""
    train, val = [], []
    for path in paths:
        head, tail = split_document(read_text_file(path)[0], val_fraction)
        train.append(head)
        val.append(tail)
    chars = sorted(set("".join(train)))
    index = {c: i for i, c in enumerate(chars)}
    unk = len(chars)

    def encode(texts):
        return np.array([index.get(c, unk) for c in "\n".join(texts)], dtype=np.int32)
    return encode(train), encode(val), len(chars) + 1


def windows(ids, gen, batch, block):
    starts = torch.randint(len(ids) - block - 1, (batch,), generator=gen).tolist()
    x = torch.from_numpy(np.stack([ids[s:s + block] for s in starts])).long()
    y = torch.from_numpy(np.stack([ids[s + 1:s + 1 + block] for s in starts])).long()
    return x, y


def report(curve, args):
    """Bits per character after 5 and 10 minutes, and the curves in one chart."""
    runs = {"character-level baseline": curve}
    for spec in args.compare:
        label, _, path = spec.rpartition("=")
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        runs[f"MiniGLM: {label or os.path.basename(os.path.dirname(path))}"] = [r for r in rows if "val_bpc" in r]
    for name, rows in runs.items():
        for minutes in (5, 10):
            at = [r for r in rows if r["time"] <= minutes * 60]
            if at:
                print(f"{name} after {minutes} min: {at[-1]['val_bpc']:.3f} bits/char (step {at[-1]['step']})")
    if not args.compare:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in runs.items():
        ax.plot([r["time"] / 60 for r in rows], [r["val_bpc"] for r in rows], label=name)
    ax.set_xlabel("training minutes (evaluations not counted)")
    ax.set_ylabel("held-out bits per character")
    ax.set_ylim(top=min(10.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = os.path.join(args.output, "bpc.png")
    fig.savefig(png + ".tmp.png", dpi=110)
    os.replace(png + ".tmp.png", png)
    print(f"wrote {png}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", help=".txt files or folders, as given to prepare.py --input")
    ap.add_argument("--minutes", type=float, default=10.0, help="training time (evaluations not counted)")
    ap.add_argument("--max_steps", type=int, default=0, help="stop after this many steps too (0: no limit)")
    ap.add_argument("--val_fraction", type=float, default=0.05)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval_every", type=float, default=20.0, help="seconds of training between evaluations")
    ap.add_argument("--eval_batches", type=int, default=10)
    ap.add_argument("--compare", nargs="*", default=[],
                    help="train.py log.jsonl files ([LABEL=]PATH) to plot beside the baseline")
    ap.add_argument("--replot", action="store_true", help="no training: plot OUTPUT/curve.json again with --compare")
    ap.add_argument("--output", default="out/bpc/char")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()

    if args.replot:
        with open(os.path.join(args.output, "curve.json"), encoding="utf-8") as f:
            report(json.load(f)["curve"], args)
        return
    if not args.inputs:
        ap.error("give the novels' .txt files or folders (or --replot)")
    torch.manual_seed(args.seed)
    train_ids, val_ids, vocab = char_ids(list_text_files(args.inputs), args.val_fraction)
    print(f"{len(train_ids):,} training and {len(val_ids):,} validation characters, {vocab:,} distinct")
    model = GPT(GPTConfig(vocab_size=vocab, block_size=args.block, n_layer=args.layers, n_head=args.heads,
                          n_embd=args.width))
    opt = model.optimizers("adamw", args.lr, 0.1, (0.9, 0.95), "cpu")[0]
    bf16 = cpu_has_native_bf16()
    gen, val_gen = torch.Generator().manual_seed(args.seed), torch.Generator().manual_seed(12345)
    val_batches = [windows(val_ids, val_gen, args.batch, args.block) for _ in range(args.eval_batches)]
    budget, warmup = args.minutes * 60, 50

    @torch.no_grad()
    def val_bpc():
        model.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = sum(model(x, y)[1].item() for x, y in val_batches) / len(val_batches)
        model.train()
        return loss / math.log(2)  # one token per character: bits per token are bits per character

    curve, seconds, step, next_eval = [], 0.0, 0, 0.0
    bar = tqdm(total=round(budget), unit="s", desc="char baseline")
    while True:
        done = seconds >= budget or step == args.max_steps
        if seconds >= next_eval or done:
            curve.append({"step": step, "time": round(seconds, 1), "val_bpc": round(val_bpc(), 4)})
            bar.set_postfix(bpc=curve[-1]["val_bpc"])
            next_eval += args.eval_every
            if done:
                break
        t0 = time.perf_counter()
        lr = args.lr * (min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * seconds / budget))))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = windows(train_ids, gen, args.batch, args.block)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        dt = time.perf_counter() - t0
        seconds += dt
        bar.n = min(round(seconds), bar.total)
        bar.refresh()
    bar.close()

    os.makedirs(args.output, exist_ok=True)
    with atomic_write(os.path.join(args.output, "curve.json")) as f:
        json.dump({"config": vars(args), "vocab": vocab, "curve": curve}, f, indent=1)
    report(curve, args)


if __name__ == "__main__":
    main()
