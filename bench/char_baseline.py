"""A character-level baseline for pretraining on your own novels: held-out bits per character against minutes.

    python prepare.py --dataset novels --input ../shared/corpus/*.txt --tokenizer chars
    python train.py config/novels.py --dataset=novels --eval_interval=25 --out_dir=out/bpc/mine --overwrite=True
    python bench/char_baseline.py ../shared/corpus/*.txt --minutes 10 --compare out/bpc/mine/log.jsonl \\
        --output out/bpc/char
    python bench/char_baseline.py --replot --output out/bpc/char --compare A/log.jsonl B/log.jsonl C/curve.json

The baseline is what issue 10 compared against: a small character-level GPT (one token per character, as
nanoGPT's shakespeare_char) trained for the same minutes on the same text, validated on the same held-out tails
(prepare.py's split). --arch nanogpt (default) is nanoGPT's GPT-2 block with its character model's optimiser
settings; --arch miniglm is MiniGLM's own model fed characters. Both sides count training seconds only
(evaluations excluded) and evaluate on random windows of the validation text. Writes OUTPUT/curve.json and, with
--compare, OUTPUT/bpc.png with all the curves.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_utils import list_text_files, read_text_file, split_document  # noqa: E402
from fsutil import atomic_write  # noqa: E402
from model import CPU_BF16_MIN_SPEEDUP, GPT, GPTConfig, cpu_bf16_speedup  # noqa: E402


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


class NanoGPT(nn.Module):
    """The GPT-2 block that nanoGPT trains (its shakespeare_char is the usual character-level baseline): learned
    positions, LayerNorm, a GELU MLP of 4 x width, tied embeddings. Written here so that the baseline is the model
    the issue compared against, not MiniGLM's own (RoPE, RMSNorm, SwiGLU)."""

    def __init__(self, vocab, block, layers, heads, width):
        super().__init__()
        self.heads = heads
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(block, width)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "ln1": nn.LayerNorm(width, bias=False), "qkv": nn.Linear(width, 3 * width, bias=False),
            "proj": nn.Linear(width, width, bias=False), "ln2": nn.LayerNorm(width, bias=False),
            "up": nn.Linear(width, 4 * width, bias=False), "down": nn.Linear(4 * width, width, bias=False)})
            for _ in range(layers))
        self.ln_f = nn.LayerNorm(width, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:  # GPT-2's initialisation, residual projections scaled down with depth
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "down.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.tok(idx) + self.pos(torch.arange(T))
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](x)).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + b["proj"](y.transpose(1, 2).reshape(B, T, -1))
            x = x + b["down"](F.gelu(b["up"](b["ln2"](x))))
        logits = self.ln_f(x) @ self.tok.weight.t()
        return None, F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(-1))


def windows(ids, gen, batch, block):
    starts = torch.randint(len(ids) - block - 1, (batch,), generator=gen).tolist()
    x = torch.from_numpy(np.stack([ids[s:s + block] for s in starts])).long()
    y = torch.from_numpy(np.stack([ids[s + 1:s + 1 + block] for s in starts])).long()
    return x, y


def baseline_label(arch):
    return f"character-level baseline ({'nanoGPT' if arch == 'nanogpt' else 'MiniGLM model'})"


def report(curve, arch, args):
    """Bits per character after 5 and 10 minutes, and the curves in one chart. --compare takes train.py logs and
    other baselines' curve.json files."""
    runs = {baseline_label(arch): curve}
    for spec in args.compare:
        label, _, path = spec.rpartition("=")
        with open(path, encoding="utf-8") as f:
            if path.endswith(".json"):  # another baseline's curve.json (old ones, without an arch, were MiniGLM's)
                saved = json.load(f)
                runs[label or baseline_label(saved["config"].get("arch", "miniglm"))] = saved["curve"]
                continue
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
    ap.add_argument("--arch", choices=["nanogpt", "miniglm"], default="nanogpt",
                    help="nanogpt: the GPT-2 block nanoGPT's character-level model uses (the issue's baseline); "
                         "miniglm: MiniGLM's own model with one token per character")
    ap.add_argument("--lr", type=float, default=0.0, help="peak learning rate (default: 1e-3 nanogpt, 2e-3 miniglm)")
    ap.add_argument("--eval_every", type=float, default=20.0, help="seconds of training between evaluations")
    ap.add_argument("--eval_batches", type=int, default=10)
    ap.add_argument("--compare", nargs="*", default=[],
                    help="train.py log.jsonl files and other baselines' curve.json ([LABEL=]PATH) to plot beside it")
    ap.add_argument("--replot", action="store_true", help="no training: plot OUTPUT/curve.json again with --compare")
    ap.add_argument("--output", default="out/bpc/char")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()

    if args.replot:
        with open(os.path.join(args.output, "curve.json"), encoding="utf-8") as f:
            saved = json.load(f)
        report(saved["curve"], saved["config"].get("arch", "miniglm"), args)
        return
    if not args.inputs:
        ap.error("give the novels' .txt files or folders (or --replot)")
    torch.manual_seed(args.seed)
    train_ids, val_ids, vocab = char_ids(list_text_files(args.inputs), args.val_fraction)
    print(f"{len(train_ids):,} training and {len(val_ids):,} validation characters, {vocab:,} distinct")
    if args.arch == "nanogpt":  # nanoGPT's own settings for its character-level model: lr 1e-3, beta2 0.99
        model = NanoGPT(vocab, args.block, args.layers, args.heads, args.width)
        lr, betas = args.lr or 1e-3, (0.9, 0.99)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                 {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}],
                                lr=lr, betas=betas)
    else:  # MiniGLM's model, one token per character
        model = GPT(GPTConfig(vocab_size=vocab, block_size=args.block, n_layer=args.layers, n_head=args.heads,
                              n_embd=args.width))
        lr = args.lr or 2e-3
        opt = model.optimizers("adamw", lr, 0.1, (0.9, 0.95), "cpu")[0]
    bf16 = (cpu_bf16_speedup() or 0) > CPU_BF16_MIN_SPEEDUP  # as train.py's dtype=auto
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
        done = seconds >= budget or (args.max_steps and step >= args.max_steps)
        if seconds >= next_eval or done:
            curve.append({"step": step, "time": round(seconds, 1), "val_bpc": round(val_bpc(), 4)})
            bar.set_postfix(bpc=curve[-1]["val_bpc"])
            next_eval += args.eval_every
            if done:
                break
        t0 = time.perf_counter()
        step_lr = lr * (min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * seconds / budget))))
        for group in opt.param_groups:
            group["lr"] = step_lr
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
    report(curve, args.arch, args)


if __name__ == "__main__":
    main()
