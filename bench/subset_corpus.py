"""Is the CPU budget what keeps facts read only in pretraining out of the answers? (issue 11's exposure probe)

Allen-Zhu & Li (Physics of Language Models, Part 3.1) extracted facts by questions after about a hundred readings of
each; the CPU profile reads each of the default corpus's facts about a dozen times. This keeps a small share of the
corpus's 【sections】, chosen to hold the keys of some `corpus_only` test questions, so that the same pretraining steps
read each of those sections several times as often; `score` then compares, on those questions, the answers of a
model pretrained on the subset with those of models pretrained on the whole corpus.

    python bench/subset_corpus.py write data/jinyong/corpus data/jinyong_sub/corpus --share 0.06
    python bench/subset_corpus.py write data/jinyong/rewrites data/jinyong_sub/rewrites --share 0.06
    python bench/subset_corpus.py score data/jinyong_sub/corpus/covered.json out/exp/*/eval/answers.jsonl
    python bench/subset_corpus.py mix data/jinyong data/jinyong_mx --copies 14
    python prepare.py --dataset jinyong_mx --input data/jinyong_mx --val_input data/jinyong/val \
        --tokenizer data/jinyong/tokenizer.json && python prepare_sft.py --dataset jinyong_mx --extra

`write` chooses the sections from --sections_from (the original corpus; the same choice for every folder written,
given the same arguments): `corpus_only` questions in a seeded order, each adding the shortest section that holds all
its keys, until the kept sections are --share of the corpus's characters. The rewrites share the corpus's headers.

`mix` is Part 3.1's "mixed training" on those sections, the condition a pretraining on the subset alone lacks: a
data folder whose .txt files are the whole corpus and re-telling plus --copies more copies of the kept sections, and
whose sft.jsonl (the Q&A rows pretraining mixes in) is the source's plus every extra wording and single-fact row about
other facts of the kept sections (the section BM25 ranks first for question and reply; rows holding all the keys of
a `corpus_only` question are left out), each written with the four openings of QUESTION_OPENINGS, so that these facts
are asked about several times as often (prepare_sft.py keeps one of exact duplicates). With --only_kept the folder
holds only the kept sections and the rows about them: Part 3.1's own setting, on those sections alone.
"""
import argparse
import json
import os
import random
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_utils import DataError, list_text_files, read_text_file, split_sections  # noqa: E402
from errors import run_main  # noqa: E402
from eval_rouge import load_test, read_answers  # noqa: E402
from fsutil import atomic_output_dir  # noqa: E402
from grading import count_keys_hit  # noqa: E402
from open_book import Retriever, conversations  # noqa: E402

QUESTION_OPENINGS = ("", "请问", "我想知道，", "问一下：")


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


def kept_text(path, kept):
    """The file's sections whose headers are kept, in their order ("" when none is)."""
    chosen = [header + body for header, body in split_sections(read_text_file(path)[0])[1] if header in kept]
    return "".join(chosen).rstrip("\n") + "\n" if chosen else ""


def write(args):
    texts = [read_text_file(p)[0] for p in list_text_files([args.sections_from])]
    kept, covered = choose_sections(texts, load_test(args.test), args.share, args.seed)
    with atomic_output_dir(args.dst) as tmp:
        for path in list_text_files([args.src]):
            text = kept_text(path, kept)
            if text:
                with open(os.path.join(tmp, os.path.basename(path)), "w", encoding="utf-8") as f:
                    f.write(text)
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


def mix(args):
    corpus, test = os.path.join(args.src, "corpus"), os.path.join(args.src, "test.jsonl")
    qa_files = [os.path.join(args.src, "sft_wordings.jsonl"), os.path.join(args.src, "sft_extra", "single_facts.jsonl")]
    for path in [os.path.join(args.src, n) for n in ("sft.jsonl", "tokenizer.json")] + [test] + qa_files:
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such file (mix needs it in the source folder)")
    if os.path.isdir(args.dst) and os.listdir(args.dst):
        raise DataError(f"{args.dst}: exists and is not empty; mix writes a new folder (remove it first)")
    items = load_test(test)
    kept, covered = choose_sections([read_text_file(p)[0] for p in list_text_files([corpus])], items, args.share,
                                    args.seed)
    co_keys = [keys for _, _, group, keys in items if group == "corpus_only" and keys]
    retriever = Retriever(corpus, max_chars=180)
    same_sections, left_out = [], 0
    for path in qa_files:
        for rec, turns in conversations(path):
            if len(turns) != 2 or turns[0]["role"] != "user":
                continue
            qa = turns[0]["content"] + turns[1]["content"]
            paragraph = retriever.best(turns[0]["content"] + " " + turns[1]["content"])
            if paragraph[:paragraph.index("】") + 1] not in kept:
                continue
            if any(count_keys_hit(qa, keys) == len(keys) for keys in co_keys):
                left_out += 1  # it would teach a test answer
                continue
            meta = {k: rec[k] for k in ("book", "category") if k in rec}
            same_sections.append((turns, meta))
    sources = list_text_files([corpus, os.path.join(args.src, "rewrites")])
    with atomic_output_dir(args.dst) as tmp:
        for path in sources:
            text = kept_text(path, kept)
            if not args.only_kept:
                shutil.copy(path, tmp)
            elif text:
                with open(os.path.join(tmp, os.path.basename(path)), "w", encoding="utf-8") as f:
                    f.write(text)
            for i in range(args.copies if text else 0):
                copy = os.path.join(tmp, f"cov{i:02d}_{os.path.basename(path)}")
                with open(copy, "w", encoding="utf-8") as f:
                    f.write(text)
        with open(os.path.join(tmp, "sft.jsonl"), "w", encoding="utf-8") as out:
            if not args.only_kept:
                with open(os.path.join(args.src, "sft.jsonl"), encoding="utf-8") as f:
                    out.write(f.read().rstrip("\n") + "\n")
            for opening in QUESTION_OPENINGS:
                for turns, meta in same_sections:
                    asked = [{**turns[0], "content": opening + turns[0]["content"]}, turns[1]]
                    out.write(json.dumps({"messages": asked, **meta}, ensure_ascii=False) + "\n")
        for name in ("test.jsonl", "tokenizer.json"):
            shutil.copy(os.path.join(args.src, name), tmp)
        with open(os.path.join(tmp, "covered.json"), "w", encoding="utf-8") as f:
            json.dump({"sections": sorted(kept), "questions": covered}, f, ensure_ascii=False, indent=1)
    print(f"{args.dst}: {len(kept)} sections copied {args.copies} more times; {len(same_sections)} Q&A rows about "
          f"them, {len(QUESTION_OPENINGS)} openings each, added ({left_out} left out holding a test answer's keys)")


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
    m = sub.add_parser("mix", help="a data folder with the chosen sections read more often and asked about more")
    m.add_argument("src", help="data folder with corpus/, rewrites/, sft.jsonl, sft_wordings.jsonl, "
                               "sft_extra/single_facts.jsonl, test.jsonl and tokenizer.json")
    m.add_argument("dst", help="data folder to write (a new one)")
    m.add_argument("--copies", type=int, default=14, help="extra copies of the chosen sections")
    m.add_argument("--only_kept", action="store_true", help="without the rest of the corpus and the source's own Q&A "
                                                           "rows: Part 3.1's setting on the kept sections alone")
    m.add_argument("--share", type=float, default=0.06, help="as for write")
    m.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    {"write": write, "score": score, "mix": mix}[args.command](args)


if __name__ == "__main__":
    run_main(main)
