"""The yardstick a chat model has to beat: answer each test question with the SFT answer whose training question
shares the most characters and character pairs with it (TF-IDF weighted, cosine), no model at all. Reports
key-fact accuracy and ROUGE-L F1 per test group, as eval_rouge.py does; with answers.jsonl files of eval_rouge.py,
also how often each model gave exactly the looked-up answer, and where each model's right answers come from: a
copy of an SFT answer (character ROUGE-L F1 at least 0.9 against the nearest one), or composed. A fact only the
corpus states can reach a right answer only composed; a right `corpus_only` answer that copies an SFT answer shows
that the SFT set states that fact too.

    python bench/lookup_baseline.py [--sft data/jinyong/sft.jsonl data/jinyong/sft_wordings.jsonl]
        [--test data/jinyong/test.jsonl]
        [--answers out/eval/answers.jsonl ...]
"""
import argparse
import math
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_utils import load_conversations  # noqa: E402
from errors import UserError, run_main  # noqa: E402
from eval_rouge import char_tokens, load_test, read_answers, rouge_l  # noqa: E402
from grading import count_keys_hit  # noqa: E402

COPY_ROUGE_L = 0.9  # an answer this close to an SFT answer repeats it (BENCHMARKS.md: "Where the remaining errors")
SKIP = set("，。？！、“”《》?!,. ：:；;（）()")


def features(question):
    """Characters and adjacent character pairs of a question, punctuation dropped."""
    s = [c for c in question if c not in SKIP and not c.isspace()]
    return Counter(s + [a + b for a, b in zip(s, s[1:])])


class Lookup:
    """Nearest training question by TF-IDF cosine over features(); ties go to the earlier record."""

    def __init__(self, questions, answers):
        self.answers = answers
        counts = [features(q) for q in questions]
        df = Counter(f for c in counts for f in c)
        self.idf = {f: math.log(len(counts) / n) for f, n in df.items()}
        self.vectors = [self.weigh(c) for c in counts]

    def weigh(self, counts):
        v = {f: n * self.idf.get(f, 0.0) for f, n in counts.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {f: x / norm for f, x in v.items()}

    def answer(self, question):
        q = self.weigh(features(question))
        scores = [sum(q[f] * v.get(f, 0.0) for f in q) for v in self.vectors]
        return self.answers[max(range(len(scores)), key=scores.__getitem__)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft", nargs="+", default=["data/jinyong/sft.jsonl", "data/jinyong/sft_wordings.jsonl"],
                    help="the SFT training files (default: the default data's, with its extra wordings)")
    ap.add_argument("--test", default="data/jinyong/test.jsonl")
    ap.add_argument("--answers", nargs="*", default=[], help="answers.jsonl files written by eval_rouge.py")
    args = ap.parse_args()
    convs = []
    for path in args.sft:
        file_convs, _, bad = load_conversations(path)
        if bad:
            raise UserError(f"{path}: {len(bad)} malformed records (line {bad[0][0]}: {bad[0][1]})")
        convs += file_convs
    single = [c for c in convs if len(c) == 2]
    lookup = Lookup([c[0]["content"] for c in single], [c[1]["content"] for c in single])
    items = load_test(args.test)
    looked_up = [lookup.answer(q) for q, *_ in items]
    models = {}
    for path in args.answers:
        models[path] = {rec.get("question"): a["answer"] for rec, a in read_answers(path)}
    groups = sorted({g for _, _, g, _ in items})
    print(f"{len(single)} single-turn SFT examples, {len(items)} test questions")
    print(f"{'group':<14}{'n':>5}{'key acc.':>10}{'R-L F1':>8}" + "".join(f"  same as lookup ({i + 1})"
                                                                     for i in range(len(models))))
    for g in groups:
        idx = [i for i, it in enumerate(items) if it[2] == g]
        keyed = [i for i in idx if items[i][3]]
        acc = (sum(count_keys_hit(looked_up[i], items[i][3]) == len(items[i][3]) for i in keyed) / len(keyed)
               if keyed else float("nan"))
        f1 = [s["f"] for s in rouge_l([looked_up[i] for i in idx], [items[i][1] for i in idx], char_tokens)]
        same = [sum(m.get(items[i][0]) == looked_up[i] for i in idx) / len(idx) for m in models.values()]
        print(f"{g:<14}{len(idx):>5}{acc:>10.3f}{sum(f1) / len(f1):>8.3f}" + "".join(f"{s:>21.3f}" for s in same))
    for i, path in enumerate(models, 1):
        print(f"({i}) {path}")
    if models:
        answers = sorted({c[1]["content"] for c in single})
        nearest = Lookup(answers, answers)  # the SFT answer sharing most characters and pairs with a given answer
        print("\nright answers (every key), copied from an SFT answer or composed")
        print(f"{'model':<6}{'group':<14}{'keyed':>6}{'right':>7}{'copied':>8}{'composed':>10}")
        for i, m in enumerate(models.values(), 1):
            for g in groups:
                keyed = [it for it in items if it[2] == g and it[3] and it[0] in m]
                if not keyed:
                    continue
                right = [m[q] for q, _, _, keys in keyed if count_keys_hit(m[q], keys) == len(keys)]
                near = [nearest.answer(a) for a in right]
                copied = sum(s["f"] >= COPY_ROUGE_L for s in rouge_l(right, near, char_tokens))
                print(f"({i}){'':<3}{g:<14}{len(keyed):>6}{len(right):>7}{copied:>8}{len(right) - copied:>10}")


if __name__ == "__main__":
    run_main(main)
