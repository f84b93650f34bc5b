"""Write out/REPORT.md after run.sh: data and tokenizer, model, time per stage, curves, evaluation, sample answers."""
import argparse
import os

from checkpoint import find_checkpoint, read_info
from data_utils import COURSE_QUESTIONS, read_json
from engine import Engine, SamplingParams
from errors import run_main
from fsutil import atomic_write
from grading import answer_checks, count_keys_hit, holds_keys_as_finished_text


def fmt(value, as_percent=False):
    """A results.json number for the report: '-' for a metric that measured nothing (None or absent)."""
    if value is None:
        return "-"
    return f"{value:.1%}" if as_percent else f"{value:.3f}" if isinstance(value, float) else value


def course_verdict(answer, keys):
    """(a line for the report, whether the answer is right): the key facts of a course question it misses, and
    whether it reads as finished text (grading.answer_checks: not empty, garbled, repeating or cut off)."""
    shown = lambda ks: ", ".join(k.replace("|", "/") for k in ks)  # noqa: E731  ("A/B": either)
    missing = [k for k in keys if not count_keys_hit(answer, [k])]
    flags = [name for name, bad in answer_checks(answer).items() if bad]
    facts = f"all present ({shown(keys)})" if not missing else f"**missing {shown(missing)}** (of {shown(keys)})"
    text = "reads as finished text" if not flags else f"**{', '.join(flags)}**"
    return f"Key facts: {facts}; {text}.", holds_keys_as_finished_text(answer, keys)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="data/jinyong")
    ap.add_argument("--pretrain", default="out/pretrain")
    ap.add_argument("--sft", default="out/sft")
    ap.add_argument("--eval", default="out/eval")
    ap.add_argument("--output", default="out/REPORT.md")
    args = ap.parse_args()
    out_dir = os.path.dirname(os.path.abspath(args.output))
    rel = lambda p: os.path.relpath(p, out_dir)  # noqa: E731
    md = ["# MiniGLM run report", ""]

    meta, sft = read_json(os.path.join(args.data, "meta.json")), read_json(os.path.join(args.data, "sft_meta.json"))
    tr, va = meta["splits"]["train"], meta["splits"]["val"]
    md += ["## Data and tokenizer", "",
           f"- corpus: {len(meta['sources'])} files, {tr['chars'] + va['chars']:,} characters "
           f"(train {tr['chars']:,} / val {va['chars']:,})",
           f"- tokenizer: {meta['tokenizer']['type']}, {meta['vocab_size']:,} tokens, "
           f"{tr['chars_per_token']:.2f} characters per token",
           f"- pretraining tokens: train {tr['tokens']:,}, val {va['tokens']:,}",
           f"- SFT: read {sft['read']}, duplicates dropped {sft['duplicates_dropped']}, train "
           f"{sft['splits']['train']['examples']} examples ({sft['splits']['train']['multi_turn']} multi-turn, "
           f"{sft['splits']['train']['tokens']:,} tokens), val {sft['splits']['val']['examples']}", ""]

    info = read_info(find_checkpoint(args.sft))
    m, t = info["model"], info["train_config"]
    pre = read_info(find_checkpoint(args.pretrain))
    md += ["## Model", "",
           f"- {m['n_layer']} layers, {m['n_embd']} wide, {m['n_head']} heads ({m['n_kv_head']} key/value), "
           f"context {m['block_size']}, vocabulary {m['vocab_size']:,}",
           f"- profile {t['profile']}, device {info.get('device', t['device'])}, dtype {info.get('dtype', t['dtype'])}",
           f"- pretraining: {pre['step']} steps, best val loss {pre['best_val_loss']:.4f}; "
           f"SFT: {info['step']} steps, best val loss {info['best_val_loss']:.4f}"]
    caps = {"pretraining": pre["train_config"].get("max_seconds"), "SFT": t.get("max_seconds")}
    if any(caps.values()):  # run.sh --minutes, or a profile's own cap: it may have stopped before its steps
        md += ["- training time capped at " + ", ".join(f"{cap:.0f} s of {stage}"
                                                       for stage, cap in caps.items() if cap)]
    md += [""]

    times = os.path.join(out_dir, "stage_times.tsv")
    if os.path.exists(times):
        with open(times, encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
        md += ["## Time per stage", "", table(["stage", "seconds"], rows), ""]

    md += ["## Loss curves", "", f"![pretraining]({rel(os.path.join(args.pretrain, 'loss.png'))})", "",
           f"![SFT]({rel(os.path.join(args.sft, 'loss.png'))})", ""]

    results = read_json(os.path.join(args.eval, "results.json"))
    headline = [[name, fmt(r["rouge_l_f"]), f"{fmt(r.get('key_accuracy'))} ({r.get('n_keyed', 0)})",
                 f"{fmt(r.get('in_domain_refusal_rate'), True)} ({r.get('n_in_domain', '-')})",
                 f"{fmt(r.get('ood_decline_rate'), True)} ({r.get('n_out_of_domain', '-')})"]
                for name, r in results.items()]
    cols = ["rouge_l_f", "rouge_l_p", "rouge_l_r", "rouge_l_f_words", "key_accuracy", "n_keyed", "refusal_rate",
            "empty_rate", "garbled_rate", "repetition_rate", "truncated_rate", "avg_answer_chars", "n"]
    rows = []
    for name, r in results.items():
        for group, g in [("all", r)] + list(r.get("groups", {}).items()):
            rows.append([name, group] + [fmt(g.get(c)) for c in cols])
    md += ["## Evaluation (held-out test set, greedy decoding)", "",
           table(["model", "ROUGE-L F1 (characters)", "key-fact accuracy (answers with keys)",
                  "in-domain refusals (questions)", "out-of-domain declines (questions)"], headline), "",
           "Key-fact accuracy: the share of answers that contain every key fact the test record lists (names, places, "
           "events). A refusal is an answer that opens by declining, as MiniGLM does outside the three novels (one "
           "that states every key fact anyway answered): wanted for `out_of_domain` questions, a miss for all others.",
           "",
           table(["model", "group"] + cols, rows), "",
           "Groups: `seen` asks facts the SFT set teaches, in new words; `corpus_only` asks facts found only in "
           "the pretraining corpus; `out_of_domain` asks about things outside the three novels.", ""]
    for name, r in results.items():
        md.append(f"- {name}: perplexity {r['perplexity']:.2f} and {r['bits_per_char']:.3f} bits per character on "
                  f"the reference answers; {r['tokens_per_second']:.1f} tokens/s in batched generation")
    md += ["", f"![metrics]({rel(os.path.join(args.eval, 'metrics.png'))})", ""]

    engine = Engine.from_checkpoint(args.sft)
    md += ["## The course's four questions (greedy)", ""]
    n_right = 0
    for q, keys in COURSE_QUESTIONS.items():
        a = engine.reply(q, SamplingParams(temperature=0.0, max_new_tokens=256))
        verdict, right = course_verdict(a, keys)
        n_right += right
        md += [f"**{q}**", "", f"> {a}", "", verdict, ""]
    md += [f"{n_right} of {len(COURSE_QUESTIONS)} answers hold every key fact and read as finished text.", ""]
    md += ["Chat with the model: `python app.py`, then open http://127.0.0.1:7860", ""]

    with atomic_write(args.output) as f:
        f.write("\n".join(md))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_main(main)
