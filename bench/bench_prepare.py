"""Data preparation throughput: reading, tokenizer training and encoding, on a corpus you pass.

    python bench/bench_prepare.py ../shared/corpus                 # a folder or files of .txt
    python bench/bench_prepare.py my_novels/ --vocab_size 16384
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_utils import list_text_files, read_text_file  # noqa: E402
from tokenizer import DEFAULT_VOCAB_SIZE, Tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--vocab_size", type=int, default=DEFAULT_VOCAB_SIZE)
    args = ap.parse_args()
    t0 = time.perf_counter()
    files = list_text_files(args.inputs)
    texts = [read_text_file(f)[0] for f in files]
    n_bytes = sum(os.path.getsize(f) for f in files)
    n_chars = sum(map(len, texts))
    t1 = time.perf_counter()
    tok = Tokenizer.train((line for t in texts for line in t.split("\n") if line), args.vocab_size)
    t2 = time.perf_counter()
    n_tokens = sum(len(ids) for t in texts for ids in tok.encode_batch(t.split("\n")))
    t3 = time.perf_counter()
    print(f"corpus: {len(files)} files, {n_bytes / 1e6:.1f} MB, {n_chars:,} characters; {os.cpu_count()} cores")
    print(f"read + normalise: {t1 - t0:6.2f}s")
    print(f"train BPE {args.vocab_size}: {t2 - t1:6.2f}s  ({n_bytes / 1e6 / (t2 - t1):.1f} MB/s)")
    print(f"encode: {t3 - t2:6.2f}s  ({n_chars / (t3 - t2) / 1e6:.2f}M characters/s, {n_tokens:,} tokens, "
          f"{n_chars / n_tokens:.2f} characters per token)")
    print(f"total: {t3 - t0:.2f}s")


if __name__ == "__main__":
    main()
