"""Has the model memorised the facts the test asks about? For each key of each test record (eval_rouge.py's `keys`),
the checkpoint continues the corpus text that precedes the key's first occurrence in the corpus, greedily; a hit
is a continuation that contains the key. No question and no chat template: this is recall of the pretraining text
itself, an upper bound on what answers to questions can extract from it.

    python bench/recall_keys.py out/pretrain/latest out/sft/latest [--test data/jinyong/test.jsonl]
        [--corpus data/jinyong/corpus] [--context 60] [--answers out/eval/answers.jsonl]

Prints, per checkpoint and test group, the share of keys recalled (and how many keys were found in the corpus).
With --answers (eval_rouge.py's answers.jsonl; its first model's answers) also, per group, how many of the keys the
checkpoint recalls, and of those it does not, the chat answers contain: what questions extract of what is memorised.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checkpoint import load_checkpoint  # noqa: E402
from data_utils import DataError, list_text_files, read_records, read_text_file  # noqa: E402
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
    """(group, prompt, key, question) for each test key found in the corpus."""
    found = ((group, text_before(texts, key, context), key, q) for q, _, group, keys in items for key in keys or [])
    return [(group, prompt, key, q) for group, prompt, key, q in found if prompt]


def load_answers(path):
    """question -> answer of the first model in an answers.jsonl of eval_rouge.py."""
    answers = {}
    for _, rec, where in read_records(path):
        if isinstance(rec, DataError):
            raise rec
        if not isinstance(rec.get("answers"), dict) or not rec["answers"]:
            raise DataError(f"{where}: expected eval_rouge.py's answers.jsonl records, with an 'answers' object")
        answers[rec.get("question")] = next(iter(rec["answers"].values()))["answer"]
    return answers


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--test", default="data/jinyong/test.jsonl")
    ap.add_argument("--corpus", nargs="+", default=["data/jinyong/corpus"], help="text files or folders")
    ap.add_argument("--context", type=int, default=60, help="characters of corpus text before the key")
    ap.add_argument("--max_new_tokens", type=int, default=12)
    ap.add_argument("--answers", help="eval_rouge.py's answers.jsonl: split its key hits by recalled or not")
    args = ap.parse_args()
    answers = load_answers(args.answers) if args.answers else None
    texts = [read_text_file(p)[0] for p in list_text_files(args.corpus)]
    items = load_test(args.test)
    prompts = key_prompts(items, texts, args.context)
    n_keys = sum(len(k or []) for *_, k in items)
    print(f"{len(prompts)} of {n_keys} keys found in the corpus with {args.context} characters before them")
    groups = sorted({g for g, *_ in prompts})
    print(f"{'checkpoint':<40} " + " ".join(f"{g:>14}" for g in groups))
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    for path in args.checkpoints:
        model, tok, _, _ = load_checkpoint(path, "cpu")
        engine = Engine(model, tok, {}, "cpu")  # info without a task: a completer, even for a chat checkpoint
        outs = engine.reply_batch([p for _, p, _, _ in prompts], params, batch_size=32)
        cells, extracted = [], []
        for g in groups:
            rows = [(count_keys_hit(out, [key]), key, q) for (grp, _, key, q), out in zip(prompts, outs) if grp == g]
            hits = sum(r for r, _, _ in rows)
            cells.append(f"{hits / len(rows):.2f} ({hits}/{len(rows)})")
            if answers is not None:
                for recalled in (1, 0):
                    kq = [(key, q) for r, key, q in rows if r == recalled]
                    n = sum(count_keys_hit(answers.get(q, ""), [key]) for key, q in kq)
                    extracted.append(f"{g}: answers hold {n}/{len(kq)} of the keys {'' if recalled else 'not '}recalled")
        print(f"{path:<40} " + " ".join(f"{c:>14}" for c in cells))
        for line in extracted:
            print(f"{'':<40} {line}")


if __name__ == "__main__":
    run_main(main)
