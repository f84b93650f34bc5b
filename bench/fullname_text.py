"""A copy of the default corpus where each person is named instead of a pronoun (issue 11's 'fullname' probe).

Allen-Zhu & Li (Physics of Language Models, Part 3.1) found facts easier to extract by questions when every
sentence names its person. In the `*_people*.txt` files, a 他/她 that opens a sentence inside a person's
【section】 becomes that person's name; the section's pronoun is the one its sentences open with most often, so a
pronoun for someone else is left alone. Group sections (人物, 四大恶人, X与Y ...) are copied as they are.

    python bench/fullname_text.py data/jinyong/corpus data/jinyong_fn/corpus
    python bench/fullname_text.py data/jinyong/rewrites data/jinyong_fn/rewrites
"""
import pathlib
import re
import sys

GROUP = re.compile(r"人物|七子|八友|四大|五绝|氏$|夫妇|兄弟|护卫|恶人|外号|结局|关系|情侣|[与和、]|岛|派|帮|教")
SENTENCE_START = r"(^|[。！？；\n])"


def person_of(header):
    """The person a 【header】 is about, or None for a group or a topic."""
    name = re.sub(r"（.*?）", "", header).split("的")[0]  # 黄药师（《神雕侠侣》中） / 叶二娘的为人
    return None if GROUP.search(name) or not 2 <= len(name) <= 5 else name


def name_people(text):
    """The text with sentence-opening pronouns replaced, and how many were."""
    parts, count, name = [], 0, None
    for part in re.split(r"(【[^】]+】)", text):
        header = re.fullmatch(r"【([^】]+)】", part)
        if header:
            name = person_of(header.group(1))
        elif name:
            openers = re.findall(SENTENCE_START + r"([他她])(?!们)", part)
            if openers:
                pronoun = max("他她", key=[p for _, p in openers].count)
                part, n = re.subn(SENTENCE_START + pronoun + r"(?!们)", lambda m: m.group(1) + name, part)
                count += n
        parts.append(part)
    return "".join(parts), count


if __name__ == "__main__":
    src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    total = 0
    for f in sorted(src.glob("*.txt")):
        text = f.read_text(encoding="utf-8")
        if "_people" in f.name:
            text, n = name_people(text)
            total += n
        (dst / f.name).write_text(text, encoding="utf-8")
    print(f"{dst}: {total} pronouns replaced by names")
