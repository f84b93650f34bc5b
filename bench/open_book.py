"""Would the model answer right if it could read the page? (issue 11's open-book probe)

Facts read only in pretraining rarely reach an answer (`corpus_only`), however often they are read (BENCHMARKS.md,
`sub` and `subr`). Small transformers copy from their context far more easily than they recall from their weights,
so this writes a copy of a data folder in which every user turn begins with the corpus paragraph that BM25 (over
jieba words) ranks first for the conversation's questions so far; SFT on that copy is meant to teach the model to
answer from the paragraph, and the same copy's test set measures whether it did. `coverage` is the ceiling: the
share of keyed test questions whose keys all lie in the retrieved paragraphs. With --gold the SFT files (never the
test set) retrieve with the reply too, so that the paragraph a training row reads is the one that supports its
answer.

    python bench/open_book.py coverage data/jinyong
    python bench/open_book.py write data/jinyong data/jinyong_ob [--gold] [--extra single_facts.jsonl]
    python prepare_sft.py --dataset jinyong_ob --block_size 512 [--extra data/jinyong_ob/sft_wordings.jsonl \
        data/jinyong_ob/single_facts.jsonl]
"""
import argparse
import json
import logging
import os
import random
import re
import shutil
import sys
from collections import defaultdict

import jieba
from rank_bm25 import BM25Okapi

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_utils import (DataError, list_text_files, read_records, read_text_file,  # noqa: E402
                        record_to_messages, split_sections)
from errors import run_main  # noqa: E402
from eval_rouge import load_test  # noqa: E402
from fsutil import atomic_output_dir  # noqa: E402
from grading import count_keys_hit  # noqa: E402

jieba.setLogLevel(logging.WARNING)
PUNCTUATION = re.compile(r"[\s\W_]+")
SFT_FILES = ("sft.jsonl", "sft_wordings.jsonl", "test.jsonl")


def words(text):
    return [w for w in jieba.lcut(text) if not PUNCTUATION.fullmatch(w)]


class Retriever:
    """The corpus's paragraphs, each headed by its 【section】's header, ranked by BM25 against a question."""

    def __init__(self, corpus_dir, max_chars):
        self.paragraphs = []
        for path in list_text_files([corpus_dir]):
            for header, body in split_sections(read_text_file(path)[0])[1]:
                self.paragraphs += [(header + p.strip())[:max_chars] for p in body.split("\n\n") if p.strip()]
        if not self.paragraphs:
            raise DataError(f"{corpus_dir}: no 【section】 paragraphs to retrieve from")
        self.bm25 = BM25Okapi([words(p) for p in self.paragraphs])

    def best(self, query):
        return self.paragraphs[int(self.bm25.get_scores(words(query)).argmax())]  # the first of equal scores


def with_passage(question, passage):
    return f"资料：{passage}\n问题：{question}"


def open_book_turns(turns, retriever, gold=False):
    """The turns with every user turn led by the paragraph retrieved for all the user's turns up to it (a follow-up
    such as 那他的师父是谁？ names nobody). gold: the query also holds the reply that follows, so that the paragraph is
    the one that supports it, as a reader is trained on the passage holding its answer."""
    asked, out = [], []
    for i, t in enumerate(turns):
        if t["role"] == "user":
            asked.append(t["content"])
            reply = turns[i + 1]["content"] if gold and i + 1 < len(turns) else ""
            t = {**t, "content": with_passage(t["content"], retriever.best(" ".join(asked + [reply])))}
        out.append(t)
    return out


def coverage(args):
    retriever = Retriever(os.path.join(args.data, "corpus"), args.max_chars)
    hits = defaultdict(list)
    for question, _, group, keys in load_test(os.path.join(args.data, "test.jsonl")):
        if keys:
            hits[group].append(count_keys_hit(retriever.best(question), keys) == len(keys))
    for group, h in sorted(hits.items()):
        print(f"{group:<14} keys in the retrieved paragraph: {sum(h) / len(h):.3f} ({sum(h)}/{len(h)})")
    # how often an SFT row's paragraph supports its reply (half the reply's character pairs in it): what the row
    # teaches, reading or ignoring the paragraph
    rows = [turns for _, turns in conversations(os.path.join(args.data, "sft.jsonl"))]
    random.Random(0).shuffle(rows)
    rows = [r for r in rows if r[0]["role"] == "user"][:args.sft_sample]
    for gold in (False, True) if rows else ():
        supported = [len(pairs(r[1]["content"]) & pairs(open_book_turns(r[:2], retriever, gold)[0]["content"]))
                     >= len(pairs(r[1]["content"])) / 2 for r in rows]
        print(f"{'sft (--gold)' if gold else 'sft':<14} reply supported by the paragraph: "
              f"{sum(supported) / len(supported):.3f} ({sum(supported)}/{len(supported)})")


def pairs(text):
    return {text[i:i + 2] for i in range(len(text) - 1)}


def conversations(path):
    """(record, its turns) of each record of a Q&A file; a bad record is an error, as prepare_sft.py would say."""
    for _, rec, where in read_records(path):
        if isinstance(rec, DataError):
            raise rec
        yield rec, record_to_messages(rec, where)


def write(args):
    retriever = Retriever(os.path.join(args.src, "corpus"), args.max_chars)
    names = list(SFT_FILES) + [os.path.join("sft_extra", n) for n in args.extra]
    for name in names + ["tokenizer.json", "meta.json"]:
        if not os.path.isfile(os.path.join(args.src, name)):
            raise DataError(f"{os.path.join(args.src, name)}: no such file (write needs it in the source folder)")
    with atomic_output_dir(args.dst) as tmp:
        for name in names:  # sft_extra/'s files land beside the others (the output folder is flat)
            with open(os.path.join(tmp, os.path.basename(name)), "w", encoding="utf-8") as out:
                for rec, turns in conversations(os.path.join(args.src, name)):
                    extra = {k: rec[k] for k in ("group", "book", "category", "keys") if k in rec}
                    turns = open_book_turns(turns, retriever, gold=args.gold and name != "test.jsonl")
                    out.write(json.dumps({"messages": turns, **extra}, ensure_ascii=False) + "\n")
        for name in ("tokenizer.json", "meta.json"):
            shutil.copy(os.path.join(args.src, name), tmp)
    print(f"{args.dst}: {', '.join(names)} with a retrieved paragraph before every question")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("coverage", help="share of keyed test questions whose keys the retrieved paragraph holds")
    c.add_argument("data", help="data folder with corpus/, test.jsonl and sft.jsonl")
    c.add_argument("--sft_sample", type=int, default=300, help="SFT records checked for support (seeded)")
    w = sub.add_parser("write", help="a copy of a data folder's Q&A files with retrieved paragraphs")
    w.add_argument("src", help="data folder with corpus/, tokenizer.json, meta.json and " + ", ".join(SFT_FILES))
    w.add_argument("dst", help="folder to write the copies into (its files of the same names are replaced)")
    w.add_argument("--gold", action="store_true", help="SFT files retrieve with the reply too (the test set never)")
    w.add_argument("--extra", nargs="*", default=[],
                   help="files of SRC/sft_extra/ to write too, into DST itself (training-only Q&A)")
    for p in (c, w):
        p.add_argument("--max_chars", type=int, default=180, help="a paragraph's length cap, its header included")
    args = ap.parse_args()
    coverage(args) if args.command == "coverage" else write(args)


if __name__ == "__main__":
    run_main(main)
