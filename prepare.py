"""Corpus to tokens: python prepare.py [--dataset NAME] [--input PATH ...] [--vocab_size N] [--tokenizer KIND]

Reads .txt files in any common encoding (by default data/NAME/corpus/ and, where it exists, the re-tellings in
data/NAME/rewrites/), splits each document into a training head and a validation tail (or, with --val_input or a
data/NAME/val/ folder, trains on all of it and validates on that other text), trains a
byte-level BPE on the training text (--tokenizer chars: one that keeps Chinese to one token per character) or
reuses a tokenizer, and writes data/NAME/train.bin, val.bin
(uint16 ids, each document preceded by <|endoftext|>), tokenizer.json and meta.json. The files are fsynced and
swapped in with meta.json last (it records the token counts and the tokenizer's sha256), so that train.py can tell
an interrupted prepare.py from a finished one.
"""
import argparse
import os
import time

import numpy as np
from tqdm import tqdm

from data_utils import (DataError, dataset_dir, file_sha256, list_text_files, read_text_file, split_document,
                        write_json)
from errors import run_main
from fsutil import atomic_output_dir
from tokenizer import DEFAULT_VOCAB_SIZE, Tokenizer


def encode_documents(tok, docs, desc):
    """Each document as <|endoftext|> + its tokens, encoded in parallel batches of paragraphs."""
    ids = []
    for doc in tqdm(docs, desc=desc, unit="doc", leave=False):
        paragraphs = doc.split("\n")
        ids.append(tok.eot_id)
        for i in range(0, len(paragraphs), 2048):
            # keep the newline with each paragraph so that decoding restores the text exactly
            chunk = [p + "\n" for p in paragraphs[i:i + 2048]]
            if i + 2048 >= len(paragraphs):
                chunk[-1] = chunk[-1][:-1]
            for part in tok.encode_batch(chunk):
                ids.extend(part)
    return np.array(ids, dtype=np.uint16)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="jinyong", help="name of the folder under data/ (default jinyong)")
    ap.add_argument("--input", nargs="+",
                    help=".txt files or folders (default data/NAME/corpus/, plus data/NAME/rewrites/ if it exists)")
    ap.add_argument("--tokenizer", default="bpe",
                    help="bpe (train one), chars (train one that keeps Chinese to one token per character), gpt2 "
                         "(tiktoken's), or a tokenizer.json path")
    ap.add_argument("--vocab_size", type=int, default=DEFAULT_VOCAB_SIZE,
                    help="for --tokenizer bpe or chars (max 65536)")
    ap.add_argument("--val_fraction", type=float, default=0.05, help="tail of each document kept for validation")
    ap.add_argument("--val_input", nargs="+", default=["auto"],
                    help="validation text from these files or folders instead of each document's tail, so that "
                         "all of --input is trained on; 'auto' (default): data/NAME/val/ if it exists, else tails; "
                         "'tail': always tails")
    ap.add_argument("--data_root", default="data")
    args = ap.parse_args()
    if not 0 < args.val_fraction < 0.5:
        raise DataError(f"--val_fraction {args.val_fraction}: expected a number between 0 and 0.5")
    if args.tokenizer in ("bpe", "chars"):
        Tokenizer.check_vocab_size(args.vocab_size)  # before the corpus is read, not after
    out_dir = dataset_dir(args.data_root, args.dataset)
    inputs = args.input or [os.path.join(out_dir, "corpus")]
    if not args.input and os.path.isdir(os.path.join(out_dir, "rewrites")):
        # the default data re-tells every section once: two wordings of a fact make it easier to recall
        inputs.append(os.path.join(out_dir, "rewrites"))
    val_inputs = args.val_input
    if val_inputs == ["auto"]:
        # the default data keeps a re-telling of some of its sections for validation: every fact is trained on
        held_out = os.path.join(out_dir, "val")
        val_inputs = [held_out] if os.path.isdir(held_out) else ["tail"]
    t0 = time.time()

    files = list_text_files(inputs)
    sources, train_docs, val_docs = [], [], []
    for path in tqdm(files, desc="reading", unit="file", leave=False):
        text, enc = read_text_file(path)
        print(f"  {path}: {enc}, {len(text):,} characters")
        sources.append({"path": path, "encoding": enc, "bytes": os.path.getsize(path), "chars": len(text)})
        head, tail = split_document(text, args.val_fraction) if val_inputs == ["tail"] else (text, "")
        train_docs.append(head)
        if tail.strip():
            val_docs.append(tail)
    if val_inputs != ["tail"]:
        for path in list_text_files(val_inputs):
            text, enc = read_text_file(path)
            print(f"  {path}: {enc}, {len(text):,} characters (validation)")
            sources.append({"path": path, "encoding": enc, "bytes": os.path.getsize(path), "chars": len(text),
                            "split": "val"})
            val_docs.append(text)
    if not val_docs:
        raise DataError("the validation split is empty: the corpus is too small for --val_fraction")

    t1 = time.time()
    if args.tokenizer in ("bpe", "chars"):
        lines = (line for doc in train_docs for line in doc.split("\n") if line)
        print(f"training a {args.vocab_size}-token byte-level BPE on {sum(map(len, train_docs)):,} characters ...")
        tok = Tokenizer.train(lines, args.vocab_size, per_character=args.tokenizer == "chars")
    elif args.tokenizer == "gpt2":
        tok = Tokenizer.gpt2()
    else:
        tok = Tokenizer.load(args.tokenizer)
    t2 = time.time()

    splits = {}
    with atomic_output_dir(out_dir) as tmp:
        for name, docs in (("train", train_docs), ("val", val_docs)):
            ids = encode_documents(tok, docs, f"encoding {name}")
            ids.tofile(os.path.join(tmp, f"{name}.bin"))
            chars = sum(map(len, docs))
            splits[name] = {"documents": len(docs), "chars": chars, "tokens": int(len(ids)),
                            "chars_per_token": round(chars / len(ids), 4)}
        tok.save(os.path.join(tmp, "tokenizer.json"))
        # meta.json goes in last and vouches for the rest: train.py checks the bins' sizes and this hash
        meta = {"dataset": args.dataset, "vocab_size": tok.vocab_size, "tokenizer": tok.describe(),
                "tokenizer_sha256": file_sha256(os.path.join(tmp, "tokenizer.json")), "eot_id": tok.eot_id,
                "splits": splits, "val_fraction": args.val_fraction if val_inputs == ["tail"] else 0.0,
                "sources": sources}
        write_json(os.path.join(tmp, "meta.json"), meta)
    t3 = time.time()

    tr = splits["train"]
    print(f"wrote {out_dir}/: train {tr['tokens']:,} tokens, val {splits['val']['tokens']:,} tokens, "
          f"vocab {tok.vocab_size}, {tr['chars_per_token']:.2f} characters per token")
    print(f"time: read {t1 - t0:.1f}s, tokenizer {t2 - t1:.1f}s, encode {t3 - t2:.1f}s")


if __name__ == "__main__":
    run_main(main)
