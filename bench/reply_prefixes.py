"""Where the SFT replies part ways: the tokens at which a reply's prefix, shared with other replies, first admits
more than one next token. Only there does the question decide what follows; the rest of a reply is fixed by its
own beginning. Answers about one subject are a subset of all replies, so where they part is among these tokens too.
Reports how many such tokens a reply has and how many lie beyond its first N, the ones SFT already weighs more
(configs/sft.py: reply_start_tokens).

    python bench/reply_prefixes.py [--dataset jinyong] [--first 4]
"""
import argparse
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from batches import SFTData  # noqa: E402
from errors import run_main  # noqa: E402


def replies(data):
    """The distinct replies (token tuples) of the training examples: runs of tokens the loss mask marks."""
    found = set()
    for i in range(len(data)):
        tokens, mask = data.example(i)
        edges = np.flatnonzero(np.diff(np.r_[0, mask, 0]))
        found.update(tuple(tokens[a:b].tolist()) for a, b in zip(edges[::2], edges[1::2]))
    return found


def branch_positions(all_replies):
    """For each reply, the positions whose token is one of several that follow the same prefix in some reply."""
    next_tokens = defaultdict(set)
    for r in all_replies:
        for i in range(len(r)):
            next_tokens[r[:i]].add(r[i])
    return {r: [i for i in range(len(r)) if len(next_tokens[r[:i]]) > 1] for r in all_replies}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="jinyong")
    ap.add_argument("--data_root", default="data")
    ap.add_argument("--first", type=int, default=4, help="the reply's first tokens that SFT already weighs more")
    args = ap.parse_args()
    found = replies(SFTData(os.path.join(args.data_root, args.dataset), "train"))
    branches = branch_positions(found)
    count = np.array([len(p) for p in branches.values()])
    later = np.array([sum(i >= args.first for i in p) for p in branches.values()])
    last = np.array([max(p, default=-1) for p in branches.values()])
    length = np.array([len(r) for r in found])
    print(f"{len(found)} distinct replies, {np.median(length):.0f} tokens at the median")
    print(f"tokens where replies part: {count.mean():.2f} a reply (median {np.median(count):.0f}, "
          f"90th percentile {np.percentile(count, 90):.0f}); the last at position {np.median(last):.0f} at the median, "
          f"{np.percentile(last, 90):.0f} at the 90th percentile, {last.max()} at most")
    print(f"beyond the first {args.first} tokens: {later.sum()} of {count.sum()} ({later.sum() / count.sum():.1%}); "
          f"replies with any: {(later > 0).sum()} ({(later > 0).mean():.1%})")


if __name__ == "__main__":
    run_main(main)
