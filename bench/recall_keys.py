"""Has the model memorised the facts the test asks about? For each key of each test record (eval_rouge.py's `keys`),
the checkpoint continues the corpus text that precedes the key's first occurrence in the corpus, greedily; a hit
is a continuation that contains the key. No question and no chat template: this is recall of the pretraining text
itself, an upper bound on what answers to questions can extract from it.

    python bench/recall_keys.py out/pretrain/latest out/sft/latest [--test data/jinyong/test.jsonl]
        [--corpus data/jinyong/corpus] [--context 60] [--answers out/eval/answers.jsonl]

Prints, per checkpoint and test group, the share of keys recalled (and how many keys were found in the corpus).
With --answers (eval_rouge.py's answers.jsonl; its first model's answers) also, per group, how many of the keys the
checkpoint recalls, and of those it does not, the chat answers contain: what questions extract of what is memorised.
With --framed, a chat checkpoint is also asked each test question and given, as the start of its reply, the reference
answer's own words before a key: does an answer already framed right go on with the fact?
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checkpoint import load_checkpoint  # noqa: E402
from data_utils import list_text_files, read_text_file  # noqa: E402
from engine import Engine, SamplingParams  # noqa: E402
from errors import run_main  # noqa: E402
from eval_rouge import load_test, read_answers  # noqa: E402
from grading import count_keys_hit  # noqa: E402
from tokenizer import render_for_reply  # noqa: E402


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


def framed_prompts(items):
    """(group, question, the reference's words before the key, key) for each key the reference states after at least
    a few characters of its own."""
    out = []
    for q, ref, group, keys in items:
        for key in keys or []:
            starts = [ref.find(alt) for alt in key.split("|") if ref.find(alt) >= 4]
            if starts:
                out.append((group, q, ref[:min(starts)], key))
    return out


def shares(groups, rows):
    """'share (hits/n)' of each group, from (group, hit) rows."""
    cells = []
    for g in groups:
        hits = [h for grp, h in rows if grp == g]
        cells.append(f"{sum(hits) / max(1, len(hits)):.2f} ({sum(hits)}/{len(hits)})")
    return cells


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--test", default="data/jinyong/test.jsonl")
    ap.add_argument("--corpus", nargs="+", default=["data/jinyong/corpus"], help="text files or folders")
    ap.add_argument("--context", type=int, default=60, help="characters of corpus text before the key")
    ap.add_argument("--max_new_tokens", type=int, default=12)
    ap.add_argument("--answers", help="eval_rouge.py's answers.jsonl: split its key hits by recalled or not")
    ap.add_argument("--framed", action="store_true",
                    help="chat checkpoints: also continue each question's reference answer up to a key")
    args = ap.parse_args()
    answers = {rec.get("question"): a["answer"] for rec, a in read_answers(args.answers)} if args.answers else None
    texts = [read_text_file(p)[0] for p in list_text_files(args.corpus)]
    items = load_test(args.test)
    prompts = key_prompts(items, texts, args.context)
    framed = framed_prompts(items) if args.framed else []
    n_keys = sum(len(k or []) for *_, k in items)
    print(f"{len(prompts)} of {n_keys} keys found in the corpus with {args.context} characters before them")
    groups = sorted({g for g, *_ in prompts})
    print(f"{'checkpoint':<40} " + " ".join(f"{g:>14}" for g in groups))
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    for path in args.checkpoints:
        model, tok, info, _ = load_checkpoint(path, "cpu")
        engine = Engine(model, tok, {}, "cpu")  # info without a task: a completer, even for a chat checkpoint
        outs = engine.reply_batch([p for _, p, _, _ in prompts], params, batch_size=32)
        hit = [(grp, count_keys_hit(out, [key])) for (grp, _, key, _), out in zip(prompts, outs)]
        cells, extracted = shares(groups, hit), []
        for g in groups:
            rows = [(h, key, q) for (grp, h), (_, _, key, q) in zip(hit, prompts) if grp == g]
            if answers is not None:
                for recalled in (1, 0):
                    kq = [(key, q) for r, key, q in rows if r == recalled]
                    n = sum(count_keys_hit(answers.get(q, ""), [key]) for key, q in kq)
                    extracted.append(f"{g}: answers hold {n}/{len(kq)} of the keys {'' if recalled else 'not '}recalled")
        print(f"{path:<40} " + " ".join(f"{c:>14}" for c in cells))
        for line in extracted:
            print(f"{'':<40} {line}")
        if framed and info.get("task") == "sft":
            room = engine.block_size - args.max_new_tokens
            ids = [(render_for_reply(tok, [{"role": "user", "content": q}], room) + tok.encode(pre))[-room:]
                   for _, q, pre, _ in framed]
            outs = [engine.decode_reply(o) for i in range(0, len(ids), 32) for o in engine.generate(ids[i:i + 32], params)]
            rows = [(g, count_keys_hit(out, [key])) for (g, _, _, key), out in zip(framed, outs)]
            print(f"{'  framed by the reference':<40} " + " ".join(f"{c:>14}" for c in shares(groups, rows)))


if __name__ == "__main__":
    run_main(main)
