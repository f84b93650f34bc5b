"""Has the model memorised the facts the test asks about? For each key of each test record (eval_rouge.py's `keys`),
the checkpoint continues the corpus text that precedes the key's first occurrence in the corpus, greedily; a hit
is a continuation that contains the key. No question and no chat template: this is recall of the pretraining text
itself, an upper bound on what answers to questions can extract from it.

    python bench/recall_keys.py out/pretrain/latest out/sft/latest [--test data/jinyong/test.jsonl]
        [--corpus data/jinyong/corpus] [--context 60]

Prints, per checkpoint and test group, the share of keys recalled (and how many keys were found in the corpus).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checkpoint import load_checkpoint  # noqa: E402
from data_utils import list_text_files, read_text_file  # noqa: E402
from engine import Engine, SamplingParams  # noqa: E402
from errors import run_main  # noqa: E402
from eval_rouge import count_keys_hit, load_test  # noqa: E402


def text_before(texts, key, context):
    """The `context` characters before the first occurrence of the key (any spelling) that has that much of its
    own section before it (a prompt never crosses a 【header】), or None."""
    for text in texts:
        for alt in key.split("|"):
            start = text.find(alt)
            while start != -1 and (start < context or "【" in text[start - context:start]):
                start = text.find(alt, start + 1)
            if start != -1:
                return text[start - context:start]
    return None


def key_prompts(items, texts, context):
    """(group, prompt, key) for each test key found in the corpus."""
    found = ((group, text_before(texts, key, context), key) for _, _, group, keys in items for key in keys or [])
    return [(group, prompt, key) for group, prompt, key in found if prompt]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--test", default="data/jinyong/test.jsonl")
    ap.add_argument("--corpus", nargs="+", default=["data/jinyong/corpus"], help="text files or folders")
    ap.add_argument("--context", type=int, default=60, help="characters of corpus text before the key")
    ap.add_argument("--max_new_tokens", type=int, default=12)
    args = ap.parse_args()
    texts = [read_text_file(p)[0] for p in list_text_files(args.corpus)]
    items = load_test(args.test)
    prompts = key_prompts(items, texts, args.context)
    n_keys = sum(len(k or []) for *_, k in items)
    print(f"{len(prompts)} of {n_keys} keys found in the corpus with {args.context} characters before them")
    groups = sorted({g for g, _, _ in prompts})
    print(f"{'checkpoint':<40} " + " ".join(f"{g:>14}" for g in groups))
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    for path in args.checkpoints:
        model, tok, _, _ = load_checkpoint(path, "cpu")
        engine = Engine(model, tok, {}, "cpu")  # info without a task: a completer, even for a chat checkpoint
        outs = engine.reply_batch([p for _, p, _ in prompts], params, batch_size=32)
        cells = []
        for g in groups:
            rows = [(out, key) for (grp, _, key), out in zip(prompts, outs) if grp == g]
            hits = sum(count_keys_hit(out, [key]) for out, key in rows)
            cells.append(f"{hits / len(rows):.2f} ({hits}/{len(rows)})")
        print(f"{path:<40} " + " ".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    run_main(main)
