"""Question-answer sets to tokens and loss masks: python prepare_sft.py [--dataset NAME] [--input FILE] [--val FILE]

Training-only records (--extra; by default data/NAME/sft_wordings.jsonl when it exists: more wordings of the
questions, for the same answers) join the training split after validation is drawn, so they never change which
examples validate, and any whose first question is a validation question is dropped. Beside them each training
record of the source is written --source_copies times (default 2), so that its own wording keeps its weight
(BENCHMARKS.md: the SFT set twice beside its extra wordings). The source's records come first, once, then their
copies and the extra records; sft_meta.json's source_examples counts the first, which are what pretraining's Q&A
rows read (train.py's sft_mix_extra).

Uses the tokenizer of data/NAME/ (written by prepare.py) and the one chat format of tokenizer.py. Writes, per
split, sft_SPLIT.bin (uint16 tokens), sft_SPLIT.mask.bin (uint8, 1 where the loss counts) and
sft_SPLIT.offsets.bin (int64 start of each example, plus the end), and sft_meta.json with what was done.
"""
import argparse
import json
import os
import random

import numpy as np

from data_utils import DataError, dataset_dir, file_sha256, load_conversations, write_json
from errors import run_main
from fsutil import atomic_output_dir
from tokenizer import Tokenizer, render_conversation


def encode_split(tok, convs):
    tokens, masks, offsets, reply_chars = [], [], [0], 0
    for conv in convs:
        ids, mask = render_conversation(tok, conv)
        tokens.extend(ids)
        masks.extend(mask)
        offsets.append(len(tokens))
        reply_chars += sum(len(t["content"]) for t in conv if t["role"] == "assistant")
    return (np.array(tokens, dtype=np.uint16), np.array(masks, dtype=np.uint8), np.array(offsets, dtype=np.int64),
            reply_chars)


def dedupe(convs):
    seen, kept = set(), []
    for c in convs:
        key = json.dumps(c, ensure_ascii=False, sort_keys=True)
        if key not in seen:
            seen.add(key)
            kept.append(c)
    return kept, len(convs) - len(kept)


def first_question(conv):
    return next(t["content"] for t in conv if t["role"] == "user")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="jinyong")
    ap.add_argument("--input", help="JSONL, JSON array, CSV or TSV of Q&A pairs or conversations "
                                    "(default data/NAME/sft.jsonl)")
    ap.add_argument("--val", help="validation file; default: hold out --val_fraction of --input")
    ap.add_argument("--val_fraction", type=float, default=0.05)
    ap.add_argument("--extra", nargs="*", help="training-only Q&A files (default data/NAME/sft_wordings.jsonl when it "
                                               "exists; --extra with no file: none)")
    ap.add_argument("--source_copies", type=int, help="times each training record of --input is written when extra "
                                                      "files join (default 2; without extra files 1)")
    ap.add_argument("--block_size", type=int, default=512, help="report examples longer than this (they are cut)")
    ap.add_argument("--skip_bad", action="store_true", help="skip malformed records and report them")
    ap.add_argument("--seed", type=int, default=1337, help="for the held-out split")
    ap.add_argument("--data_root", default="data")
    args = ap.parse_args()
    if args.source_copies is not None and args.source_copies < 1:
        raise DataError(f"--source_copies {args.source_copies}: expected a whole number of at least 1")
    if not 0 < args.val_fraction < 1:
        raise DataError(f"--val_fraction {args.val_fraction}: expected a number between 0 and 1 (not included)")
    data_dir = dataset_dir(args.data_root, args.dataset)
    tok_path = os.path.join(data_dir, "tokenizer.json")
    if not os.path.exists(tok_path):
        raise DataError(f"{tok_path}: not found; prepare the dataset first: python prepare.py --dataset {args.dataset}")
    tok = Tokenizer.load(tok_path)
    src = args.input or os.path.join(data_dir, "sft.jsonl")

    convs, _, bad = load_conversations(src, skip_bad=args.skip_bad)
    n_read = len(convs) + len(bad)
    convs, n_dup = dedupe(convs)
    if args.val:
        val, _, bad_val = load_conversations(args.val, skip_bad=args.skip_bad)
        bad += [(f"{args.val}:{line}", msg) for line, msg in bad_val]
        val, _ = dedupe(val)
        train = convs
    else:
        if len(convs) < 2:  # nothing to hold out: validating on the training example would measure nothing
            raise DataError(f"{src}: only {len(convs)} usable example; hold-out validation needs at least 2 "
                            f"(or give a validation file with --val)")
        order = list(range(len(convs)))
        random.Random(args.seed).shuffle(order)
        held = set(order[:max(1, int(len(convs) * args.val_fraction))])
        train = [c for i, c in enumerate(convs) if i not in held]
        val = [c for i, c in enumerate(convs) if i in held]

    extra_files = args.extra
    if extra_files is None:
        default_extra = os.path.join(data_dir, "sft_wordings.jsonl")
        extra_files = [default_extra] if os.path.exists(default_extra) else []
    val_questions = {first_question(c) for c in val}
    n_source = len(train)
    n_extra = n_extra_dropped = 0
    for path in extra_files:
        extra, _, bad_extra = load_conversations(path, skip_bad=args.skip_bad)
        n_read += len(extra) + len(bad_extra)
        bad += [(f"{path}:{line}", msg) for line, msg in bad_extra]
        kept = [c for c in extra if first_question(c) not in val_questions]
        n_extra_dropped += len(extra) - len(kept)
        n_extra += len(kept)
        train = train + kept
    source_copies = args.source_copies or (2 if extra_files else 1)
    if extra_files:
        train, n_dup_extra = dedupe(train)  # the source's records come first and are kept
        n_dup += n_dup_extra
    train = train[:n_source] * source_copies + train[n_source:]

    report = {"source": src, "val_source": args.val or f"{args.val_fraction:.0%} of source", "read": n_read,
              "source_examples": n_source, "extra_sources": extra_files, "extra_examples": n_extra,
              "extra_dropped_as_val_questions": n_extra_dropped, "source_copies": source_copies,
              "bad_skipped": len(bad), "bad_lines": [line for line, _ in bad][:50], "duplicates_dropped": n_dup,
              "block_size": args.block_size, "tokenizer_sha256": file_sha256(tok_path), "splits": {}}
    with atomic_output_dir(data_dir) as tmp:
        for split, cs in (("train", train), ("val", val)):
            tokens, masks, offsets, reply_chars = encode_split(tok, cs)
            tokens.tofile(os.path.join(tmp, f"sft_{split}.bin"))
            masks.tofile(os.path.join(tmp, f"sft_{split}.mask.bin"))
            offsets.tofile(os.path.join(tmp, f"sft_{split}.offsets.bin"))
            lengths = np.diff(offsets)
            too_long = int((lengths > args.block_size + 1).sum())
            report["splits"][split] = {
                "examples": len(cs), "multi_turn": sum(1 for c in cs if sum(t["role"] == "user" for t in c) > 1),
                "tokens": int(len(tokens)), "loss_tokens": int(masks.sum()), "reply_chars": reply_chars,
                "longer_than_block_size": too_long,
                "length_percentiles": {p: int(np.percentile(lengths, p)) for p in (50, 90, 99, 100)}}
        write_json(os.path.join(tmp, "sft_meta.json"), report)

    for line, msg in bad:
        print(f"skipped: {msg}")
    for split, s in report["splits"].items():
        pct = s["length_percentiles"]
        print(f"{split}: {s['examples']} examples ({s['multi_turn']} multi-turn), {s['tokens']:,} tokens, "
              f"{s['loss_tokens']:,} in replies; length p50 {pct[50]} p90 {pct[90]} p99 {pct[99]} max {pct[100]}")
        if s["longer_than_block_size"]:
            print(f"  {s['longer_than_block_size']} examples are longer than block_size={args.block_size}+1 and "
                  "will be cut at the end during training")
    if extra_files:
        print(f"training-only: {n_extra} examples from {', '.join(extra_files)} ({n_extra_dropped} dropped: their "
              f"question is a validation question)")
    if source_copies > 1:
        print(f"each of the source's {n_source} training records is written {source_copies} times")
    print(f"read {n_read}, skipped {len(bad)} bad, dropped {n_dup} exact duplicates; wrote {data_dir}/sft_*")


if __name__ == "__main__":
    run_main(main)
