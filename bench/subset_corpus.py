"""Is the CPU budget what keeps facts read only in pretraining out of the answers? (issue 11's exposure probe)

Allen-Zhu & Li (Physics of Language Models, Part 3.1) extracted facts by questions after about a hundred readings of
each; the CPU profile reads each of the default corpus's facts about a dozen times. This keeps a small share of the
corpus's 【sections】, chosen to hold the keys of some `corpus_only` test questions, so that the same pretraining steps
read each of those sections several times as often; `score` then compares, on those questions, the answers of a
model pretrained on the subset with those of models pretrained on the whole corpus.

    python bench/subset_corpus.py write data/jinyong/corpus data/jinyong_sub/corpus --share 0.06
    python bench/subset_corpus.py write data/jinyong/rewrites data/jinyong_sub/rewrites --share 0.06
    python bench/subset_corpus.py score data/jinyong_sub/corpus/covered.json out/exp/*/eval/answers.jsonl

`write` chooses the sections from --sections_from (the original corpus; the same choice for every folder written,
given the same arguments): `corpus_only` questions in a seeded order, each adding the shortest section that holds all
its keys, until the kept sections are --share of the corpus's characters. The rewrites share the corpus's headers.
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_utils import list_text_files, read_text_file, split_sections  # noqa: E402
from errors import run_main  # noqa: E402
from eval_rouge import count_keys_hit, load_test, read_answers  # noqa: E402
from fsutil import atomic_output_dir  # noqa: E402


def choose_sections(texts, items, share, seed):
    """(kept headers, questions covered): see the module's docstring. A question is covered when one kept section
    holds all of its keys."""
    found = [s for text in texts for s in split_sections(text)[1]]
    total = sum(len(body) for _, body in found)
    questions = [(q, keys) for q, _, group, keys in items if group == "corpus_only" and keys]
    random.Random(seed).shuffle(questions)
    kept, size = set(), 0
    for _, keys in questions:
        if size >= share * total:
            break
        holding = [(len(body), header) for header, body in found if count_keys_hit(body, keys) == len(keys)]
        length, header = min(holding, default=(0, None))
        if header is not None and header not in kept:
            kept.add(header)
            size += length
    covered = [q for q, keys in questions
               if any(header in kept and count_keys_hit(body, keys) == len(keys) for header, body in found)]
    return kept, covered


def write(args):
    texts = [read_text_file(p)[0] for p in list_text_files([args.sections_from])]
    kept, covered = choose_sections(texts, load_test(args.test), args.share, args.seed)
    with atomic_output_dir(args.dst) as tmp:
        for path in list_text_files([args.src]):
            text, _ = read_text_file(path)
            chosen = [header + body for header, body in split_sections(text)[1] if header in kept]
            if chosen:
                with open(os.path.join(tmp, os.path.basename(path)), "w", encoding="utf-8") as f:
                    f.write("".join(chosen).rstrip("\n") + "\n")
        with open(os.path.join(tmp, "covered.json"), "w", encoding="utf-8") as f:
            json.dump({"sections": sorted(kept), "questions": covered}, f, ensure_ascii=False, indent=1)
    print(f"{args.dst}: {len(kept)} sections kept, holding the keys of {len(covered)} corpus_only questions")


def score(args):
    with open(args.covered, encoding="utf-8") as f:
        covered = set(json.load(f)["questions"])
    print(f"{'answers':<50} {'covered':>16} {'other corpus_only':>18}")
    for path in args.answers:
        hits = {True: [], False: []}
        for rec, answer in read_answers(path):
            if rec.get("group") == "corpus_only" and rec.get("keys"):
                hits[rec.get("question") in covered].append(bool(answer.get("correct")))
        cells = [f"{sum(h) / max(1, len(h)):.3f} ({sum(h)}/{len(h)})" for h in (hits[True], hits[False])]
        print(f"{path:<50} {cells[0]:>16} {cells[1]:>18}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="a copy of a corpus folder with only the chosen sections")
    w.add_argument("src", help="folder of corpus .txt files")
    w.add_argument("dst", help="folder to write the copy and covered.json to (replaced together)")
    w.add_argument("--sections_from", default="data/jinyong/corpus", help="the corpus the sections are chosen from")
    w.add_argument("--test", default="data/jinyong/test.jsonl")
    w.add_argument("--share", type=float, default=0.06, help="share of the corpus's characters kept")
    w.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score", help="key-fact accuracy on the covered corpus_only questions and on the others")
    s.add_argument("covered", help="covered.json written by `write`")
    s.add_argument("answers", nargs="+", help="eval_rouge.py's answers.jsonl files (their first model each)")
    args = ap.parse_args()
    write(args) if args.command == "write" else score(args)


if __name__ == "__main__":
    run_main(main)
