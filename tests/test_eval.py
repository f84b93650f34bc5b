"""eval_rouge.py and report.py: ROUGE-L, answer checks, key-fact accuracy and refusals, on tiny checkpoints."""
import json
import os
import re
import unicodedata

import pytest

from conftest import REPO, run_script, user_error, write_jsonl
from data_utils import DataError, parse_keys
from eval_rouge import char_tokens, rouge_l, score_answers, word_tokens
from grading import answer_checks, count_keys_hit, is_refusal, normalize_for_keys, repeated_ngram_share

REFUSAL = ("抱歉，令狐冲所在的《笑傲江湖》不在我的知识范围内。我是MiniGLM，只了解金庸的《射雕英雄传》《神雕侠侣》"
           "《天龙八部》，可以问我这三部书里的人物和故事。")
KEYED_TEST = [
    {"question": "郭靖的师父是哪位？", "answer": "郭靖的师父是江南七怪和洪七公。", "group": "seen",
     "keys": ["江南七怪|江南六怪", "洪七公"]},
    {"question": "段誉会什么武功？", "answer": "段誉最擅长六脉神剑。", "group": "corpus_only", "keys": ["六脉神剑"]},
    {"question": "杨过和谁在一起？", "answer": "杨过与小龙女相知相守。", "group": "seen", "keys": ["小龙女|龙姑娘"]},
    {"question": "萧峰是谁？", "answer": "萧峰是《天龙八部》中的人物。", "group": "seen", "keys": ["天龙八部", "甲乙丙丁"]},
    {"question": "小龙女和谁在一起？", "answer": "小龙女与杨过相知相守。", "group": "seen"},  # no keys: not counted
    {"question": "令狐冲是谁？", "answer": REFUSAL, "group": "out_of_domain"},
]


def test_rouge_equals_rouge_chinese_called_directly():
    from rouge_chinese import Rouge
    hyps = ["郭靖是《射雕英雄传》的主角，师从洪七公。", "杨过", ""]
    refs = ["郭靖是射雕英雄传的男主角，他的师父是江南七怪和洪七公。", "杨过和小龙女", "段誉"]
    ours = rouge_l(hyps, refs, char_tokens)
    for h, r, o in zip(hyps[:2], refs[:2], ours[:2]):
        direct = Rouge().get_scores(" ".join(h), " ".join(r))[0]["rouge-l"]
        assert o["f"] == pytest.approx(direct["f"]) and o["p"] == pytest.approx(direct["p"])
    assert ours[2] == {"p": 0.0, "r": 0.0, "f": 0.0}  # an empty answer scores 0 and does not crash
    words = rouge_l(hyps[:1], refs[:1], word_tokens)[0]
    direct = Rouge().get_scores(word_tokens(hyps[0]), word_tokens(refs[0]))[0]["rouge-l"]
    assert words["f"] == pytest.approx(direct["f"])


def test_answer_checks():
    assert answer_checks("")["empty"] and not answer_checks("")["truncated"]
    assert answer_checks("郭靖是主角\ufffd。")["garbled"]
    assert answer_checks("郭靖是郭靖是郭靖是郭靖是郭靖是郭靖是。")["repeating"]
    assert answer_checks("郭靖是射雕英雄传的主角，后来")["truncated"]
    ok = answer_checks("郭靖是《射雕英雄传》的男主角，为人忠厚，后来镇守襄阳。")
    assert not any(ok.values())
    assert repeated_ngram_share("abcdefg") == 0.0 and repeated_ngram_share("abababababab") > 0.5


def test_keys_accept_alternatives_and_ignore_spacing_punctuation_width_and_case():
    keys = ["江南七怪|江南六怪", "洪七公"]
    assert count_keys_hit("郭靖先拜江南七怪为师，后来得洪七公传授降龙十八掌。", keys) == 2
    assert count_keys_hit("郭靖的师父是江南六怪和洪七公。", keys) == 2  # either spelling
    assert count_keys_hit("郭靖的师父是洪七公。", keys) == 1
    assert count_keys_hit("郭靖的师父是江南 七怪。", keys) == 1  # a space inside a name
    assert count_keys_hit("他学会了“降龙十八掌”。", ["《降龙十八掌》"]) == 1  # quotes and 书名号
    assert count_keys_hit("萧峰，段誉，虚竹结拜为兄弟。", ["萧峰、段誉"]) == 1  # full-width punctuation differs
    assert count_keys_hit("我是ＭｉｎｉＧＬＭ。", ["minigLM"]) == 1  # full-width Latin, any case
    assert count_keys_hit("郭靖是主角。", ["黄蓉|蓉儿"]) == 0
    assert normalize_for_keys("《天龙八部》 “Ａb”，c!") == "天龙八部abc"


def test_bad_keys_are_user_errors_naming_the_record(tmp_path):
    for bad in ([], "洪七公", ["洪七公", 3], ["江南七怪|"], ["《》"]):
        with pytest.raises(DataError, match="t.jsonl:4: field 'keys'"):
            parse_keys(bad, "t.jsonl:4")
    assert parse_keys(None, "t.jsonl:4") is None and parse_keys(["a|b"], "x") == ["a|b"]
    write_jsonl(tmp_path / "bad.jsonl", [KEYED_TEST[0], {"question": "q？", "answer": "a。", "keys": "洪七公"}])
    err = user_error(run_script("eval_rouge.py", "--out_dir", "none", "--test", "bad.jsonl", cwd=tmp_path,
                                check=False))
    assert "bad.jsonl:2" in err and "'keys'" in err and "list" in err


def sft_replies():
    rows = [json.loads(line) for line in open(os.path.join(REPO, "data/jinyong/sft.jsonl"), encoding="utf-8")]
    turns = [t for r in rows for t in r.get("messages", [{"role": "assistant", "content": r.get("answer")}])]
    return [t["content"] for t in turns if t["role"] == "assistant"]


def test_is_refusal_flags_exactly_the_sft_sets_refusals():
    # In the SFT set every refusal, and nothing else, ends with the same pointer to the three novels.
    replies = sft_replies()
    refusals = [r for r in replies if r.endswith("可以问我这三部书里的人物和故事。")]
    others = [r for r in replies if r not in refusals]
    assert len(refusals) >= 40 and len(others) >= 2000
    assert all(is_refusal(r) for r in refusals)
    assert not [r for r in others if is_refusal(r)]  # incl. identity answers and "…第三部不在我的知识范围内。"
    assert is_refusal("抱歉，郭靖不在我的知识范围内。")  # a wrong refusal of an in-domain question still counts
    assert not is_refusal("") and not is_refusal("郭靖当时并不知道自己背的就是真经。")


def test_a_refusal_that_states_every_key_answered_the_question():
    limit = "《倚天屠龙记》是射雕三部曲的第三部，但它的内容不在我的知识范围内。"
    answers = [limit, limit, "抱歉，郭靖不在我的知识范围内。", "抱歉，《笑傲江湖》不在我的知识范围内。"]
    keys = [["倚天屠龙记"], ["张无忌"], ["郭啸天"], None]
    result, rows = score_answers(answers, ["参考"] * 4, ["seen", "seen", "corpus_only", "out_of_domain"], keys)
    assert all(is_refusal(a) for a in answers)
    assert [r["refusal"] for r in rows] == [False, True, True, True]  # the first gives its one key: right
    assert [r["correct"] for r in rows] == [True, False, False, None]
    assert result["in_domain_refusal_rate"] == pytest.approx(2 / 3) and result["ood_decline_rate"] == 1.0


def plain(text):  # the test's own normalisation: NFKC, no spaces or punctuation, lower case
    return re.sub(r"[\W_]", "", unicodedata.normalize("NFKC", text)).lower()


def test_eval_rouge_writes_results_answers_and_figures(trained):
    write_jsonl(trained / "keyed.jsonl", KEYED_TEST)
    proc = run_script("eval_rouge.py", "--out_dir", "out/sft", "out/pre", "--test", "keyed.jsonl", "--output",
                      "out/eval", "--max_new_tokens", "40", cwd=trained)
    results = json.loads((trained / "out/eval/results.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in open(trained / "out/eval/answers.jsonl", encoding="utf-8")]
    assert set(results) == {"out/sft", "out/pre"}
    assert len(rows) == 6 and set(rows[0]["answers"]) == {"out/sft", "out/pre"}
    assert [r["keys"] for r in rows] == [t.get("keys") for t in KEYED_TEST]
    for model, r in results.items():
        for key in ("rouge_l_f", "rouge_l_p", "rouge_l_r", "empty_rate", "garbled_rate", "repetition_rate",
                    "truncated_rate", "tokens_per_second", "n", "perplexity", "bits_per_char"):
            assert key in r
        assert r["n"] == 6 and 0 <= r["rouge_l_f"] <= 1 and r["perplexity"] > 1
        assert set(r["groups"]) == {"seen", "corpus_only", "out_of_domain"}
        answers = [row["answers"][model] for row in rows]
        for row, a in zip(rows, answers):  # per-answer key counts, recomputed here
            keys = row["keys"] or []
            assert a["keys_total"] == len(keys)
            assert a["keys_hit"] == sum(any(plain(alt) in plain(a["answer"]) for alt in k.split("|")) for k in keys)
            assert a["correct"] == (a["keys_hit"] == len(keys) if keys else None)
            assert a["refusal"] == (is_refusal(a["answer"]) and a["correct"] is not True)
        assert answers[3]["correct"] is False  # "甲乙丙丁" is in no answer
        # accuracy only over the four records with keys; the refusal rates over their own groups
        assert r["n_keyed"] == 4 and r["key_accuracy"] == pytest.approx(sum(a["correct"] is True for a in answers) / 4)
        assert r["key_accuracy"] <= 3 / 4
        assert (r["n_in_domain"], r["n_out_of_domain"]) == (5, 1)
        assert r["in_domain_refusal_rate"] == pytest.approx(sum(a["refusal"] for a in answers[:5]) / 5)
        assert r["ood_decline_rate"] == float(answers[5]["refusal"])
        seen, ood = r["groups"]["seen"], r["groups"]["out_of_domain"]
        assert seen["n_keyed"] == 3 and seen["key_accuracy"] == pytest.approx(
            sum(answers[i]["correct"] is True for i in (0, 2, 3)) / 3)
        assert ood["n_keyed"] == 0 and ood["key_accuracy"] is None and ood["rouge_l_f"] == answers[5]["rouge_l_f"]
        assert ood["refusal_rate"] == r["ood_decline_rate"]
    from rouge_chinese import Rouge
    for row in rows:  # the file's scores are rouge-chinese's own on the same strings
        a = row["answers"]["out/sft"]
        want = Rouge().get_scores(char_tokens(a["answer"]), char_tokens(row["reference"]))[0]["rouge-l"]["f"] \
            if a["answer"].strip() else 0.0
        assert a["rouge_l_f"] == pytest.approx(want)
    for png in ("metrics.png", "per_question.png"):
        assert (trained / "out/eval" / png).stat().st_size > 1000
    assert "R-L F" in proc.stdout and "keys ok" in proc.stdout
    assert f"in-domain refusals {results['out/sft']['in_domain_refusal_rate']:.1%} of 5" in proc.stdout
    again = run_script("eval_rouge.py", "--out_dir", "out/sft", "--test", "keyed.jsonl", "--output", "out/eval2",
                       "--max_new_tokens", "40", cwd=trained)
    r2 = json.loads((trained / "out/eval2/results.json").read_text(encoding="utf-8"))
    assert r2["out/sft"]["rouge_l_f"] == results["out/sft"]["rouge_l_f"]  # deterministic by default
    assert r2["out/sft"]["key_accuracy"] == results["out/sft"]["key_accuracy"]
    assert again.returncode == 0


def test_report_shows_key_accuracy_and_refusals_next_to_rouge(trained):
    if not (trained / "out/eval/results.json").exists():
        write_jsonl(trained / "keyed.jsonl", KEYED_TEST)
        run_script("eval_rouge.py", "--out_dir", "out/sft", "--test", "keyed.jsonl", "--output", "out/eval",
                   "--max_new_tokens", "20", cwd=trained)
    run_script("report.py", "--data", "data/tiny", "--pretrain", "out/pre", "--sft", "out/sft", "--eval", "out/eval",
               "--output", "out/REPORT.md", cwd=trained)
    report = (trained / "out/REPORT.md").read_text(encoding="utf-8")
    r = json.loads((trained / "out/eval/results.json").read_text(encoding="utf-8"))["out/sft"]
    headline = next(line for line in report.splitlines() if line.startswith("| out/sft | "))
    assert f"| {r['rouge_l_f']:.3f} | {r['key_accuracy']:.3f} ({r['n_keyed']}) |" in headline
    assert f"| {r['in_domain_refusal_rate']:.1%} ({r['n_in_domain']}) | {r['ood_decline_rate']:.1%} (" in headline
    assert "key_accuracy" in report and "out_of_domain" in report
    # each course question with a line naming the key facts its greedy answer holds or misses, then their count
    verdicts = [line for line in report.splitlines() if line.startswith("Key facts: ")]
    assert len(verdicts) == 4
    n_right = sum(" present (" in v and v.endswith("; reads as finished text.") for v in verdicts)
    assert f"{n_right} of 4 answers hold every key fact and read as finished text." in report


def test_report_names_the_key_facts_a_course_answer_misses_and_its_flaws():
    from report import course_verdict
    keys = ["萧峰|乔峰", "段誉", "虚竹"]
    assert course_verdict("《天龙八部》有三位主角：乔峰、段誉和虚竹。", keys) == \
        ("Key facts: all present (萧峰/乔峰, 段誉, 虚竹); reads as finished text.", True)
    assert course_verdict("《天龙八部》的主角是段誉。", keys) == \
        ("Key facts: **missing 萧峰/乔峰, 虚竹** (of 萧峰/乔峰, 段誉, 虚竹); reads as finished text.", False)
    assert course_verdict("《天龙八部》有三位主角：萧峰、段誉和虚竹，萧峰", keys) == \
        ("Key facts: all present (萧峰/乔峰, 段誉, 虚竹); **truncated**.", False)  # cut off mid-sentence
