"""The embedded default data in data/jinyong/ loads with the project's own readers and meets its promises."""
import glob
import os
import re

from conftest import REPO
from data_utils import load_conversations, read_text_file

DATA = os.path.join(REPO, "data", "jinyong")
END = tuple("。！？…”」）")


def norm(q):
    return re.sub(r"[\s，。？！、“”《》?!,.]", "", q)


def test_corpus_is_large_enough_and_reads_cleanly():
    files = sorted(glob.glob(os.path.join(DATA, "corpus", "kb_*.txt")))
    assert len(files) == 6
    texts = [read_text_file(f)[0] for f in files]
    han = sum(len(re.findall(r"[\u4e00-\u9fff]", t)) for t in texts)
    assert han >= 150_000
    sections = [s for t in texts for s in re.findall(r"^【(.+?)】$", t, flags=re.M)]
    people = [s for f, t in zip(files, texts) if "people" in f for s in re.findall(r"^【(.+?)】$", t, flags=re.M)]
    assert len(sections) >= 400 and len(people) >= 150


def test_sft_set_loads_and_covers_what_was_promised():
    convs, recs, bad = load_conversations(os.path.join(DATA, "sft.jsonl"))
    assert not bad
    single = [c for c in convs if len(c) == 2]
    multi = [c for c in convs if len(c) > 2]
    assert len(single) >= 1500 and len(multi) >= 100
    assert {r.get("book") for r in recs} == {"射雕英雄传", "神雕侠侣", "天龙八部", "其他"}
    assert {r.get("category") for r in recs} == {"人物介绍", "情节", "人物关系", "其他"}
    replies = [t["content"] for c in convs for t in c if t["role"] == "assistant"]
    assert all(15 <= len(r) <= 220 and r.endswith(END) for r in replies)
    questions = {norm(c[0]["content"]) for c in single}
    for q in ("介绍一下《天龙八部》的主角", "讲一下射雕英雄传中有名的比武的情节", "小龙女和杨过的关系和故事",
              "《射雕英雄传》讲了什么故事？"):
        assert norm(q) in questions


def test_test_set_is_held_out_and_has_both_groups():
    convs, recs, _ = load_conversations(os.path.join(DATA, "test.jsonl"))
    groups = [r["group"] for r in recs]
    assert len(convs) >= 200 and groups.count("seen") >= 100 and groups.count("corpus_only") >= 100
    train, _, _ = load_conversations(os.path.join(DATA, "sft.jsonl"))
    train_q = {norm(t["content"]) for c in train for t in c if t["role"] == "user"}
    assert not [c[0]["content"] for c in convs if norm(c[0]["content"]) in train_q]
