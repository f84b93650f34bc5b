"""Whole-book questions in new words: does each reach the answer about the right book and the right aspect?

The default SFT set holds several answers about each novel as a whole (its story, main characters, ending, themes,
era, opening, title). They share most of their words, so a model that reads questions by their characters hands
one the answer of another ("the themes" for "the main characters"). Each question below is asked greedily; it
counts as right when the first 40 characters of the reply contain its mark (a phrase only a right answer opens
with; "A|B" accepts either) and name no other of the three novels first. None of them is an SFT or test question
of the default data (a test checks this). Then the course's four questions (training questions, the app's
examples): each counts as right when its reply holds every key fact data_utils.COURSE_QUESTIONS lists for it and
reads as finished text (grading.answer_checks: not empty, garbled, repeating or cut off).

    python bench/book_questions.py out/sft [out/exp/NAME_s2/sft ...] [--json counts.json]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_utils import COURSE_QUESTIONS, write_json  # noqa: E402
from engine import Engine, SamplingParams  # noqa: E402
from errors import run_main  # noqa: E402
from grading import holds_keys_as_finished_text  # noqa: E402

QUESTIONS = [  # (question, mark)
    ("天龙八部里的主角都是谁？", "有三位主角|没有单一的主角"),
    ("请介绍天龙八部的几个主角。", "有三位主角|没有单一的主角"),
    ("天龙八部这本书讲了啥？", "讲的是北宋"),
    ("给我讲讲天龙八部的故事。", "讲的是北宋"),
    ("天龙八部最后结局如何？", "结局以悲剧"),
    ("天龙八部的主题是啥？", "主题"),
    ("天龙八部的故事是在什么朝代？", "发生在北宋"),
    ("天龙八部这个书名怎么解释？", "书名出自佛经"),
    ("射雕英雄传讲了个什么故事？", "成长故事"),
    ("给我讲讲射雕英雄传的故事。", "成长故事"),
    ("射雕英雄传最后的结局是什么？", "结局是：杨康"),
    ("射雕英雄传的男女主角是谁？", "男主角是郭靖"),
    ("射雕英雄传的主题是啥？", "主题"),
    ("射雕英雄传开头写了什么？", "开篇写临安"),
    ("射雕英雄传里有名的比武有哪几场？", "最有名的比武"),
    ("射雕英雄传的书名是什么意思？", "书名与草原射雕|书名中的射雕"),
    ("神雕侠侣讲了个什么故事？", "爱情故事|主要情节是"),
    ("神雕侠侣最后的结局是什么？", "以第三次华山论剑收尾"),
    ("神雕侠侣的主题是啥？", "主题"),
    ("神雕侠侣开头写了什么？", "开篇于嘉兴陆家庄"),
    ("神雕侠侣的主角是谁？", "杨过是《神雕侠侣》的男主角|讲的是杨过与小龙女|主角杨过"),
    ("神雕侠侣的书名是什么意思？", "“神雕”"),
    ("神雕侠侣的故事发生在哪个年代？", "南宋末年"),
    ("神雕侠侣和射雕英雄传是什么关系？", "是《射雕英雄传》的直接续篇|是《射雕英雄传》的续集"),
]
BOOKS = ("天龙八部", "射雕英雄传", "神雕侠侣")


def first_book(text):
    named = [(text.find(b), b) for b in BOOKS if b in text]
    return min(named)[1] if named else None


def right(question, reply, mark):
    """The reply's opening holds the mark, and the first novel it names is the one asked about."""
    head = reply[:40]
    return any(m in head for m in mark.split("|")) and first_book(head) in (None, first_book(question))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoint folders (an SFT out_dir, or its best/ or latest/)")
    ap.add_argument("--show", action="store_true", help="print every reply, not only the wrong ones")
    ap.add_argument("--json", help="also write the counts of each checkpoint to this JSON file")
    args = ap.parse_args()
    params = SamplingParams(temperature=0.0, max_new_tokens=60)
    course_params = SamplingParams(temperature=0.0, max_new_tokens=256)  # as out/REPORT.md asks them
    counts = {}
    for path in args.checkpoints:
        engine = Engine.from_checkpoint(path)
        n_right = n_course = 0
        for question, mark in QUESTIONS:
            reply = engine.reply(question, params)
            ok = right(question, reply, mark)
            n_right += ok
            if args.show or not ok:
                print(f"  {'right' if ok else 'WRONG'}  {question} -> {reply[:40]}")
        for question, keys in COURSE_QUESTIONS.items():
            reply = engine.reply(question, course_params)
            ok = holds_keys_as_finished_text(reply, keys)
            n_course += ok
            if args.show or not ok:
                print(f"  {'right' if ok else 'WRONG'}  course: {question} -> {reply[:40]}")
        counts[path] = {"book_questions": n_right, "n_book_questions": len(QUESTIONS),
                        "course_questions": n_course, "n_course_questions": len(COURSE_QUESTIONS)}
        print(f"{path}: {n_right}/{len(QUESTIONS)} whole-book questions reach the right answer; "
              f"{n_course}/{len(COURSE_QUESTIONS)} course questions hold every key fact, as finished text")
    if args.json:
        write_json(args.json, counts)


if __name__ == "__main__":
    run_main(main)
