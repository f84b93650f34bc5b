"""A copy of the default corpus where each person is named instead of a pronoun (issue 11's 'fullname' probe).

Allen-Zhu & Li (Physics of Language Models, Part 3.1) found facts easier to extract by questions when every
sentence names its person. In the `*_people*.txt` files, a 他/她 that opens a sentence inside a person's
【section】 becomes that person's name; the section's pronoun is the one its sentences open with most often, so a
pronoun for someone else is left alone. Group sections (人物, 四大恶人, X与Y ...) are copied as they are.

    python bench/fullname_text.py data/jinyong/corpus data/jinyong_fn/corpus
    python bench/fullname_text.py data/jinyong/rewrites data/jinyong_fn/rewrites
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_utils import list_text_files, read_text_file, split_sections  # noqa: E402
from errors import run_main  # noqa: E402
from fsutil import atomic_output_dir  # noqa: E402

GROUP = re.compile(r"人物|七子|八友|四大|五绝|氏$|夫妇|兄弟|护卫|恶人|外号|结局|关系|情侣|[与和、]|岛|派|帮|教")
SENTENCE_START = r"(^|[。！？；\n])"


def person_of(header):
    """The person a 【header】 is about, or None for a group or a topic."""
    name = re.sub(r"（.*?）", "", header).split("的")[0]  # 黄药师（《神雕侠侣》中） / 叶二娘的为人
    return None if GROUP.search(name) or not 2 <= len(name) <= 5 else name


def name_people(text):
    """The text with sentence-opening pronouns replaced, and how many were."""
    preamble, sections = split_sections(text)
    parts, count = [preamble], 0
    for header, body in sections:
        name = person_of(header[1:-1])
        openers = re.findall(SENTENCE_START + r"([他她])(?!们)", body) if name else []
        if openers:
            pronoun = max("他她", key=[p for _, p in openers].count)
            body, n = re.subn(SENTENCE_START + pronoun + r"(?!们)", lambda m: m.group(1) + name, body)
            count += n
        parts += [header, body]
    return "".join(parts), count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="folder of corpus .txt files")
    parser.add_argument("dst", help="folder to write the copy to (its files are replaced together)")
    args = parser.parse_args()
    total = 0
    with atomic_output_dir(args.dst) as tmp:
        for path in list_text_files([args.src]):
            text, _ = read_text_file(path)
            if "_people" in os.path.basename(path):
                text, n = name_people(text)
                total += n
            with open(os.path.join(tmp, os.path.basename(path)), "w", encoding="utf-8") as f:
                f.write(text)
    print(f"{args.dst}: {total} pronouns replaced by names")


if __name__ == "__main__":
    run_main(main)
