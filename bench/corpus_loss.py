"""How well checkpoints still model the corpus: mean loss (nats a token) on fixed windows of a dataset's train.bin
and val.bin, the model's own next-token loss without any chat template. Shows what SFT overwrites of pretraining.

    python bench/corpus_loss.py out/pretrain/latest out/sft/latest [--dataset jinyong] [--windows 48]

A uniform guess scores ln(vocabulary size); the same windows are used for every checkpoint.
"""
import argparse
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checkpoint import load_checkpoint  # noqa: E402
from batches import Batches, open_tokens  # noqa: E402
from errors import run_main  # noqa: E402


@torch.no_grad()
def mean_loss(model, tokens, count, length, batch=8):
    """Over `count` windows of `length` tokens drawn as pretraining draws them, from a fixed seed."""
    windows = Batches(length, 0, tokens, count).next()
    x, y = windows["x"], windows["y"]
    return float(np.mean([model(x[i:i + batch], y[i:i + batch])[1].item() for i in range(0, count, batch)]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--dataset", default="jinyong")
    ap.add_argument("--windows", type=int, default=48)
    ap.add_argument("--length", type=int, default=256)
    args = ap.parse_args()
    data = {s: open_tokens(os.path.join("data", args.dataset, f"{s}.bin")) for s in ("train", "val")}
    print(f"{'checkpoint':<40} {'train':>7} {'val':>7}  (nats a token; uniform guess = ln(vocab))")
    for path in args.checkpoints:
        model, tok, _, _ = load_checkpoint(path, "cpu")
        length = min(args.length, model.config.block_size)
        losses = {s: mean_loss(model, t, args.windows, length) for s, t in data.items()}
        print(f"{path:<40} {losses['train']:>7.3f} {losses['val']:>7.3f}  (uniform {math.log(tok.vocab_size):.2f})")


if __name__ == "__main__":
    run_main(main)
