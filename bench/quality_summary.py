"""The figures of bench/quality.sh's runs, per seed and their mean: python bench/quality_summary.py NAME [SEED ...]

Reads out/exp/NAME_sSEED/eval/{results,book_questions}.json of every seed evaluated under NAME, earlier calls' too
(one call a seed when each starts from its own PRETRAINED model), plus the given seeds, which must be there. Prints
a table (ROUGE-L per group, key-fact accuracy, in-domain refusals and out-of-domain declines, the whole-book and
course questions, SFT seconds and the step of best/) and writes out/exp/NAME.json: {figure: {seed: value, "mean": m}}.
"""
import argparse
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from errors import UserError, run_main  # noqa: E402
from fsutil import atomic_write  # noqa: E402
from runlog import read_log  # noqa: E402

# (label, figure, is a count): counts print whole per seed, their mean with one decimal; the rest with three
COLUMNS = [("seen", "seen.rouge_l_f", False), ("co", "corpus_only.rouge_l_f", False),
           ("key", "all.key_accuracy", False), ("seen_key", "seen.key_accuracy", False),
           ("co_key", "corpus_only.key_accuracy", False), ("in_ref", "in_domain_refusals", True),
           ("ood", "ood_decline_rate", False), ("book", "book_questions", True), ("course", "course_questions", True),
           ("sft_s", "sft_seconds", True), ("best", "sft_best_step", True)]


def seed_figures(run):
    """Every figure of one seed's run folder that is there, flat: {"seen.rouge_l_f": 0.55, ...}."""
    results = next(iter(json.load(open(os.path.join(run, "eval", "results.json"), encoding="utf-8")).values()))
    figures = {}
    for group, r in [("all", results)] + list(results.get("groups", {}).items()):
        for k in ("rouge_l_f", "key_accuracy", "refusal_rate"):
            if r.get(k) is not None:
                figures[f"{group}.{k}"] = r[k]
    for k in ("in_domain_refusal_rate", "ood_decline_rate"):
        if results.get(k) is not None:
            figures[k] = results[k]
    if results.get("in_domain_refusal_rate") is not None:
        figures["in_domain_refusals"] = round(results["in_domain_refusal_rate"] * results["n_in_domain"])
    book = next(iter(json.load(open(os.path.join(run, "eval", "book_questions.json"), encoding="utf-8")).values()))
    figures.update({k: book[k] for k in ("book_questions", "course_questions")})
    rows, _ = read_log(os.path.join(run, "sft"))  # [] without a log
    if rows:
        figures["sft_seconds"] = max(r.get("time", 0) for r in rows)
    best = os.path.join(run, "sft", "best", "config.json")
    if os.path.exists(best):
        figures["sft_best_step"] = json.load(open(best, encoding="utf-8")).get("step")
    return figures


def seeds_of(name, root="out/exp"):
    """The seeds evaluated under NAME: NAME_s<digits> folders holding both evaluation files."""
    pattern = re.compile(rf"{re.escape(name)}_s(\d+)")
    return sorted((m.group(1) for d in glob.glob(os.path.join(root, glob.escape(name) + "_s*"))
                   if (m := pattern.fullmatch(os.path.basename(d)))
                   and os.path.exists(os.path.join(d, "eval", "book_questions.json"))), key=int)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("seeds", nargs="*", help="seeds that must be there (default: every one found)")
    ap.add_argument("--root", default="out/exp")
    args = ap.parse_args()
    seeds = seeds_of(args.name, args.root)
    missing = [s for s in args.seeds if s not in seeds]
    if missing or not seeds:
        raise UserError(f"{args.root}/{args.name}_s{(missing or ['SEED'])[0]}/eval: no evaluation there "
                        f"(bench/quality.sh writes it)")
    per_seed = {s: seed_figures(os.path.join(args.root, f"{args.name}_s{s}")) for s in seeds}
    table = {}
    for s, figures in per_seed.items():
        for k, v in figures.items():
            table.setdefault(k, {})[s] = v
    out = {k: {**v, "mean": sum(v.values()) / len(v)} for k, v in table.items() if None not in v.values()}
    with atomic_write(os.path.join(args.root, f"{args.name}.json")) as f:
        json.dump(out, f, indent=1)
    if args.seeds and sorted(args.seeds) != sorted(seeds):
        print(f"{args.name}: the mean is over seeds {' '.join(seeds)}, earlier calls' included", file=sys.stderr)
    shown = [c for c in COLUMNS if c[1] in out]
    print(f"{'run':<18}" + "".join(f"{label:>9}" for label, _, _ in shown))
    for row in seeds + ["mean"]:
        cells = []
        for _, key, count in shown:
            value = out[key].get(row)
            cells.append(f"{'':>9}" if value is None else f"{value:9.0f}" if count and row != "mean"
                         else f"{value:9.1f}" if count else f"{value:9.3f}")
        print(f"{args.name + (' mean' if row == 'mean' else '_s' + row):<18}" + "".join(cells))


if __name__ == "__main__":
    run_main(main)
