"""Greedy answers to the test set from an ensemble: the mean of several chat models' next-token probabilities
(issue 11's probe of how much of the `seen` errors is one training run's luck; BENCHMARKS.md, "Three SFT seeds").
Each model keeps its own KV cache; Engine generates as for one model. One folder gives that model's own answers.
--dropout_copies K adds the first model K more times with its training dropout left on ("MC dropout"): an
ensemble that costs no more training, only K more forwards a token.

    python bench/ensemble.py out/sft_a out/sft_b out/sft_c --output out/ensemble.json
    python bench/ensemble.py out/sft --dropout_copies 4 --output out/ensemble_mc.json
"""
import argparse
import copy
import json
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checkpoint import load_checkpoint  # noqa: E402
from engine import Engine, SamplingParams  # noqa: E402
from errors import UserError, run_main  # noqa: E402
from eval_rouge import load_test, score_answers  # noqa: E402
from fsutil import atomic_write  # noqa: E402
from model import Dropout, KVCache  # noqa: E402


class Ensemble(nn.Module):
    """Forward of several models on the same tokens; returns the log of their mean next-token probabilities."""

    def __init__(self, models, noisy=()):
        super().__init__()
        self.models, self.config = nn.ModuleList(models), models[0].config
        self.noisy = noisy  # members whose residual dropout stays on (the attention weights' stays off)
        self.cache_of, self.caches = None, []

    def train(self, mode=True):
        """Engine puts the ensemble in eval mode; the noisy members' dropout draws anyway."""
        super().train(mode)
        for i in self.noisy:
            for mod in self.models[i].modules():
                mod.training = mode or isinstance(mod, Dropout)
        return self

    def forward(self, idx, cache=None):
        if cache is None:
            outs = [m(idx)[0] for m in self.models]
        else:
            if cache is not self.cache_of:  # Engine made a new cache: one more for each other model, same keys
                self.cache_of, self.caches = cache, []
                for m in self.models[1:]:
                    c = KVCache(m.config, cache.k.shape[1], cache.max_len, cache.k.device, cache.k.dtype)
                    c.key_valid.copy_(cache.key_valid)
                    self.caches.append(c)
            outs = [self.models[0](idx, cache=cache)[0]]
            outs += [m(idx, cache=c)[0] for m, c in zip(self.models[1:], self.caches)]
        return torch.stack([o.float().softmax(-1) for o in outs]).mean(0).log(), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="SFT run or checkpoint folders (the same tokenizer)")
    ap.add_argument("--dropout_copies", type=int, default=0,
                    help="add the first model this many more times with its training dropout on (MC dropout)")
    ap.add_argument("--dropout", type=float, default=None,
                    help="those copies' dropout rate (default: the rate the first model was trained with)")
    ap.add_argument("--test", default="data/jinyong/test.jsonl")
    ap.add_argument("--output", default="out/ensemble.json")
    args = ap.parse_args()
    loaded = [load_checkpoint(c, "cpu") for c in args.checkpoints]
    _, tok, info, _ = loaded[0]
    if any(t.to_dict()["mergeable_ranks"] != tok.to_dict()["mergeable_ranks"] for _, t, _, _ in loaded[1:]):
        raise UserError(f"{', '.join(args.checkpoints)}: the checkpoints have different tokenizers")
    models = [m for m, _, _, _ in loaded]
    copy_dropout = models[0].config.dropout if args.dropout is None else args.dropout
    if args.dropout_copies and args.dropout is None and copy_dropout <= 0:
        raise UserError(f"{args.checkpoints[0]}: trained without dropout; give --dropout for its copies")
    for _ in range(args.dropout_copies):
        models.append(copy.deepcopy(models[0]))
        models[-1].set_dropout(copy_dropout, 0.0)
    torch.manual_seed(1337)  # the copies' dropout masks
    engine = Engine(Ensemble(models, noisy=range(len(loaded), len(models))), tok, info, "cpu")
    questions, references, groups, keys = zip(*load_test(args.test))
    answers = engine.reply_batch(list(questions), SamplingParams(temperature=0.0, seed=1337))
    result, _ = score_answers(answers, references, groups, keys)  # the metrics of eval_rouge.py's results.json
    for g, m in result["groups"].items():
        keys = "–" if m["key_accuracy"] is None else f"{m['key_accuracy']:.3f}"
        print(f"{g}: ROUGE-L {m['rouge_l_f']:.3f}, key-fact accuracy {keys}, refusals {m['refusal_rate']:.1%} "
              f"of {m['n']}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with atomic_write(args.output, "w") as f:
        json.dump({"checkpoints": args.checkpoints, "dropout_copies": args.dropout_copies,
                   "dropout": copy_dropout if args.dropout_copies else None, **result,
                   "answers": [{"question": q, "answer": a} for q, a in zip(questions, answers)]},
                  f, ensure_ascii=False, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_main(main)
