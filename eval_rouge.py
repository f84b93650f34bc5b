"""Evaluate chat checkpoints on held-out questions: ROUGE-L, perplexity, and the checks a person applies.

    python eval_rouge.py                                   # out/sft on data/jinyong/test.jsonl
    python eval_rouge.py --out_dir out/sft out/sft_b --test my_test.jsonl --output out/eval/compare

For each model: ROUGE-L precision/recall/F1 (rouge-chinese) over characters and, separately, over jieba words;
the share of answers that are empty, garbled (U+FFFD), repeating themselves, or cut off (no sentence-final mark);
average answer length; tokens per second; perplexity and bits per character of the reference answers. Key-fact
accuracy over the records with a "keys" field (a list of strings a right answer must contain, "A|B" accepting
either), and how often the model declines: among in-domain questions and among group "out_of_domain".
Results per test group when the file has a "group" field. Greedy decoding by default, so runs repeat exactly.
Writes results.json, answers.jsonl, metrics.png and per_question.png to --output.
"""
import argparse
import json
import math
import os

import torch

from data_utils import DataError, parse_keys, read_records, record_to_messages, write_json
from engine import Engine, add_sampling_args, sampling_params
from errors import UserError, run_main
from fsutil import atomic_write
from grading import answer_checks, count_keys_hit, is_refusal
from plotting import plot_bars, plot_per_question
from tokenizer import render_conversation

OUT_OF_DOMAIN = "out_of_domain"  # the test group whose right answer is an honest refusal
ANSWER_FIELDS = ("answer", "rouge_l_f", "keys_hit", "keys_total", "correct", "refusal")  # per answer, answers.jsonl


def char_tokens(text):
    return " ".join(ch for ch in text if not ch.isspace())


def word_tokens(text):
    import jieba
    return " ".join(w for w in jieba.lcut(text) if w.strip())


def rouge_l(hyps, refs, tokenize):
    """Per-pair ROUGE-L {p, r, f} from rouge-chinese on whole answers; an empty answer scores 0."""
    from rouge_chinese import Rouge
    rouge = Rouge(metrics=["rouge-l"])
    out = []
    for h, r in zip(hyps, refs):
        th, tr = tokenize(h), tokenize(r)
        if not th.strip() or not tr.strip():
            out.append({"p": 0.0, "r": 0.0, "f": 0.0})
            continue
        s = rouge.get_scores(th, tr)[0]["rouge-l"]
        out.append({"p": s["p"], "r": s["r"], "f": s["f"]})
    return out


def read_answers(path):
    """[(record, its first model's answer)] of an answers.jsonl this script wrote; a clear error for anything else."""
    out = []
    for _, rec, where in read_records(path):
        if isinstance(rec, DataError):
            raise rec
        if not isinstance(rec.get("answers"), dict) or not rec["answers"]:
            raise DataError(f"{where}: expected eval_rouge.py's answers.jsonl records, with an 'answers' object")
        out.append((rec, next(iter(rec["answers"].values()))))
    return out


def load_test(path):
    """(question, reference, group, keys) of each single-turn record of a Q&A file; multi-turn ones are skipped."""
    items = []
    for _, rec, where in read_records(path):
        if isinstance(rec, DataError):
            raise rec
        turns = [t for t in record_to_messages(rec, where) if t["role"] != "system"]
        if len(turns) == 2:
            items.append((turns[0]["content"], turns[1]["content"], str(rec.get("group", "")),
                          parse_keys(rec.get("keys"), where)))
    return items


@torch.no_grad()
def reference_loss(engine, questions, references):
    """Perplexity and bits per character of the reference answers given their questions."""
    tok, model = engine.tok, engine.model
    total_nats, total_tokens, total_chars = 0.0, 0, 0
    for q, ref in zip(questions, references):
        if engine.is_chat:
            turns = [{"role": "user", "content": q}, {"role": "assistant", "content": ref}]
            ids, mask = render_conversation(tok, turns)
        else:
            prompt, answer = [tok.eot_id] + tok.encode(q), tok.encode(ref)
            ids, mask = prompt + answer, [0] * len(prompt) + [1] * len(answer)
        ids, mask = ids[:engine.block_size + 1], mask[:engine.block_size + 1]
        x = torch.tensor([ids[:-1]], device=engine.device)
        y = torch.tensor([ids[1:]], device=engine.device)
        m = torch.tensor([mask[1:]], device=engine.device)
        _, loss = model(x, y, m)
        n = int(m.sum())
        total_nats += loss.item() * n
        total_tokens += n
        total_chars += len(ref)
    return {"perplexity": math.exp(total_nats / max(1, total_tokens)),
            "bits_per_char": total_nats / math.log(2) / max(1, total_chars)}


def share(rows, key):
    """Mean of a 0/1 field over rows; None when there are no rows (not 0: nothing was measured)."""
    return sum(r[key] for r in rows) / len(rows) if rows else None


def summarize(rows):
    """Aggregate per-answer rows of one model into the metrics of results.json."""
    n = len(rows)
    mean = lambda key: sum(r[key] for r in rows) / n if n else 0.0  # noqa: E731
    keyed = [r for r in rows if r["correct"] is not None]  # accuracy only over records that have keys
    return {"n": n, "rouge_l_f": mean("rouge_l_f"), "rouge_l_p": mean("rouge_l_p"), "rouge_l_r": mean("rouge_l_r"),
            "rouge_l_f_words": mean("rouge_l_f_words"), "rouge_l_p_words": mean("rouge_l_p_words"),
            "rouge_l_r_words": mean("rouge_l_r_words"), "key_accuracy": share(keyed, "correct"),
            "n_keyed": len(keyed), "refusal_rate": mean("refusal"), "empty_rate": mean("empty"),
            "garbled_rate": mean("garbled"), "repetition_rate": mean("repeating"), "truncated_rate": mean("truncated"),
            "avg_answer_chars": mean("answer_chars")}


def score_answers(answers, references, groups, keys):
    """(metrics overall and per group, one row per answer) of a model's answers to the test records."""
    chars, words = rouge_l(answers, references, char_tokens), rouge_l(answers, references, word_tokens)
    rows = []
    for a, c, w, g, record_keys in zip(answers, chars, words, groups, keys):
        checks = answer_checks(a)
        hit = count_keys_hit(a, record_keys) if record_keys else 0
        correct = hit == len(record_keys) if record_keys else None
        rows.append({"answer": a, "group": g, "rouge_l_f": c["f"], "rouge_l_p": c["p"], "rouge_l_r": c["r"],
                     "rouge_l_f_words": w["f"], "rouge_l_p_words": w["p"], "rouge_l_r_words": w["r"],
                     "keys_hit": hit, "keys_total": len(record_keys or []),
                     "correct": correct,
                     # a refusal that states every key anyway answered (射雕三部曲的第三部叫什么？ -> "《倚天屠龙记》是
                     # 射雕三部曲的第三部，但它的内容不在我的知识范围内。"): it is right, not declined
                     "refusal": is_refusal(a) and correct is not True, "answer_chars": len(a),
                     **{k: float(v) for k, v in checks.items()}})
    result = summarize(rows)
    in_domain = [r for r in rows if r["group"] != OUT_OF_DOMAIN]
    out_of_domain = [r for r in rows if r["group"] == OUT_OF_DOMAIN]
    result.update(in_domain_refusal_rate=share(in_domain, "refusal"), n_in_domain=len(in_domain),
                  ood_decline_rate=share(out_of_domain, "refusal"), n_out_of_domain=len(out_of_domain))
    result["groups"] = {g: summarize([r for r in rows if r["group"] == g]) for g in sorted(set(groups)) if g}
    return result, rows


def evaluate(engine, questions, references, groups, keys, params, batch_size):
    answers = engine.reply_batch(questions, params, batch_size=batch_size)
    stats = dict(engine.last_stats)
    result, rows = score_answers(answers, references, groups, keys)
    result["tokens_per_second"] = stats["tokens"] / stats["seconds"] if stats["seconds"] else 0.0
    result.update(reference_loss(engine, questions, references))
    return result, rows


def refusal_summary(res):
    """One line: key-fact accuracy, in-domain refusals and out-of-domain declines, with their counts."""
    def rate(value, n):
        return f"{value:.1%} of {n}" if value is not None else "none asked"
    acc = f"{res['key_accuracy']:.3f} over {res['n_keyed']} answers with keys" if res["key_accuracy"] is not None \
        else "no keys in the test file"
    return (f"key-fact accuracy {acc}; in-domain refusals {rate(res['in_domain_refusal_rate'], res['n_in_domain'])}, "
            f"out-of-domain declines {rate(res['ood_decline_rate'], res['n_out_of_domain'])}")


def print_table(results):
    cols = [("rouge_l_f", "R-L F"), ("rouge_l_p", "R-L P"), ("rouge_l_r", "R-L R"), ("rouge_l_f_words", "R-L F word"),
            ("key_accuracy", "keys ok"), ("n_keyed", "n keyed"), ("refusal_rate", "refused"), ("empty_rate", "empty"),
            ("garbled_rate", "garbled"), ("repetition_rate", "repeat"), ("truncated_rate", "cut off"),
            ("avg_answer_chars", "chars"), ("n", "n")]
    print(f"{'model':<28}{'group':<14}" + "".join(f"{h:>11}" for _, h in cols))
    for name, res in results.items():
        for group, r in [("all", res)] + list(res.get("groups", {}).items()):
            cells = "".join(f"{r[k]:>11.3f}" if isinstance(r[k], float) else f"{'-' if r[k] is None else r[k]:>11}"
                            for k, _ in cols)
            print(f"{name[-27:]:<28}{group:<14}{cells}")
        print(f"{'':<28}{refusal_summary(res)}")
        print(f"{'':<28}perplexity {res['perplexity']:.2f}, {res['bits_per_char']:.3f} bits/char on the references, "
              f"{res['tokens_per_second']:.1f} tokens/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out_dir", nargs="+", default=["out/sft"], help="checkpoint or run folders to compare")
    ap.add_argument("--test", default="data/jinyong/test.jsonl", help="any Q&A file prepare_sft.py accepts")
    ap.add_argument("--output", default="out/eval", help="folder for results.json, answers.jsonl and figures")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N questions")
    add_sampling_args(ap, temperature=0.0)
    args = ap.parse_args()
    if args.limit < 0:
        raise UserError(f"--limit {args.limit}: expected a number of questions (0: all)")
    if os.path.exists(args.output) and not os.path.isdir(args.output):  # found before the answers, not after
        raise UserError(f"--output {args.output}: a file is there; expected a folder for the results")

    items = load_test(args.test)
    if args.limit:
        items = items[:args.limit]
    if not items:
        raise DataError(f"{args.test}: no single-turn question-answer pairs to evaluate")
    questions, references, groups, keys = (list(column) for column in zip(*items))
    params = sampling_params(args)

    results, answers = {}, {}
    for path in args.out_dir:
        engine = Engine.from_checkpoint(path, args.device, args.dtype, chat=args.chat or None)
        name = os.path.normpath(path)
        print(f"evaluating {engine.folder} on {len(questions)} questions ...")
        results[name], answers[name] = evaluate(engine, questions, references, groups, keys, params,
                                                    args.batch_size)

    os.makedirs(args.output, exist_ok=True)
    write_json(os.path.join(args.output, "results.json"), results)
    with atomic_write(os.path.join(args.output, "answers.jsonl")) as f:
        for i, (q, ref, g, k) in enumerate(zip(questions, references, groups, keys)):
            row = {"question": q, "reference": ref, "group": g, "keys": k,
                   "answers": {m: {field: answers[m][i][field] for field in ANSWER_FIELDS} for m in results}}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    metrics = ["rouge_l_f", "rouge_l_p", "rouge_l_r", "rouge_l_f_words", "key_accuracy", "refusal_rate",
               "empty_rate", "garbled_rate", "repetition_rate", "truncated_rate"]
    bars = {}
    for m, r in results.items():  # each model overall, then per test group
        bars[m] = r
        bars.update({f"{m} [{g}]": gr for g, gr in r.get("groups", {}).items()})
    plot_bars(bars, metrics, os.path.join(args.output, "metrics.png"), f"{os.path.basename(args.test)}")
    plot_per_question({m: [r["rouge_l_f"] for r in answers[m]] for m in results},
                      os.path.join(args.output, "per_question.png"), "ROUGE-L F1 (characters) per question")
    print_table(results)
    print(f"wrote {args.output}/results.json, answers.jsonl, metrics.png, per_question.png")


if __name__ == "__main__":
    run_main(main)
