"""A copy of a corpus folder with the sentences of every 【section】 shuffled (issue 11's 'permute' probe).

Allen-Zhu & Li (Physics of Language Models, Part 3.1) found facts easier to extract by questions when the copies a
model reads state them in different sentence orders, so that a fact cannot be recalled only as the continuation
of the sentence before it. This writes a copy of each .txt file where the sentences of each section are shuffled
(a quotation is kept whole; the shuffle is seeded by the section's header and --seed, so the copy is the same on
every machine) and laid out again in about as many paragraphs as the section had. Best applied to a copy whose
sentences name their person (bench/fullname_text.py), since a moved 他 may point at someone else.

    python bench/permute_text.py data/jinyong_fn/rewrites data/jinyong_pm/rewrites
"""
import argparse
import os
import random
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_utils import list_text_files, read_text_file, split_sections  # noqa: E402
from errors import run_main  # noqa: E402
from fsutil import atomic_output_dir  # noqa: E402

ENDS, OPEN, CLOSE = "。！？", "“「『（(", "”」』）)"


def sentences(paragraph):
    """The sentences of a paragraph: each ends at 。！？ (with its closing quotes) outside any quotation."""
    out, start, depth = [], 0, 0
    for i, ch in enumerate(paragraph):
        depth += (ch in OPEN) - (ch in CLOSE)
        depth = max(depth, 0)
        end_here = depth == 0 and (ch in ENDS or (ch in CLOSE and paragraph[i - 1] in ENDS))
        if end_here and (i + 1 == len(paragraph) or paragraph[i + 1] not in CLOSE + ENDS):
            out.append(paragraph[start:i + 1])
            start = i + 1
    if paragraph[start:].strip():
        out.append(paragraph[start:])
    return out


def permute_section(header, body, seed):
    """The section's body with its sentences in a seeded random order, in no more paragraphs than before."""
    paragraphs = [p.strip() for p in body.split("\n") if p.strip()]
    if not paragraphs:
        return body
    found = [s for p in paragraphs for s in sentences(p)]
    random.Random(zlib.crc32(f"{seed}:{header}".encode("utf-8"))).shuffle(found)
    size = -(-len(found) // len(paragraphs))  # no more paragraphs than before, about equal
    lines = ["".join(found[i:i + size]) for i in range(0, len(found), size)]
    return "\n\n" + "\n\n".join(lines) + "\n\n"


def permute_text(text, seed=0):
    """The text with every 【section】's sentences shuffled; text before the first header is kept as it is."""
    preamble, sections = split_sections(text)
    out = [preamble]
    for header, body in sections:
        out += [header, permute_section(header, body, seed)]
    return "".join(out).rstrip("\n") + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="folder of corpus .txt files")
    parser.add_argument("dst", help="folder to write the copy to (its files are replaced together)")
    parser.add_argument("--seed", type=int, default=0, help="another seed gives another order")
    args = parser.parse_args()
    with atomic_output_dir(args.dst) as tmp:
        for path in list_text_files([args.src]):
            text, _ = read_text_file(path)
            with open(os.path.join(tmp, os.path.basename(path)), "w", encoding="utf-8") as f:
                f.write(permute_text(text, args.seed))
    print(f"{args.dst}: sentences shuffled within each section")


if __name__ == "__main__":
    run_main(main)
