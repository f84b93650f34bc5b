"""sample.py and eval_rouge.py driven by tiny checkpoints made in the session."""
import json

import pytest

from conftest import run_script, user_error, write_jsonl
from eval_rouge import answer_checks, char_tokens, repeated_ngram_share, rouge_l, word_tokens


def test_sample_continues_text_with_a_pretraining_checkpoint(trained):
    proc = run_script("sample.py", "--out_dir", "out/pre", "--start", "郭靖", "--max_new_tokens", "30",
                      "--num_samples", "2", cwd=trained)
    assert proc.stdout.count("---") == 2 and proc.stdout.count("郭靖") >= 2
    assert "text completion" in proc.stderr
    assert "tokens/s" in proc.stdout.strip().splitlines()[-1]


def test_sample_answers_questions_from_a_file_and_in_batch_mode(trained):
    (trained / "prompts.txt").write_text("郭靖是谁？\n段誉的师父是谁？\n", encoding="utf-8")
    proc = run_script("sample.py", "--out_dir", "out/sft", "--start", "FILE:prompts.txt", "--max_new_tokens", "30",
                      cwd=trained)
    assert "--- 郭靖是谁？" in proc.stdout and "--- 段誉的师父是谁？" in proc.stdout
    write_jsonl(trained / "in.jsonl", [{"question": "郭靖是谁？", "id": 7}, {"question": "杨过和谁在一起？"}])
    proc = run_script("sample.py", "--out_dir", "out/sft", "--input_data", "in.jsonl", "--output_data",
                      "answers.jsonl", "--max_new_tokens", "30", cwd=trained)
    rows = [json.loads(line) for line in open(trained / "answers.jsonl", encoding="utf-8")]
    assert [r["question"] for r in rows] == ["郭靖是谁？", "杨过和谁在一起？"] and rows[0]["id"] == 7
    assert all(isinstance(r["answer"], str) for r in rows)
    assert "generated" in proc.stdout.strip().splitlines()[-1]
    (trained / "bad.jsonl").write_text('{"q": "no question field"}\n', encoding="utf-8")
    err = user_error(run_script("sample.py", "--out_dir", "out/sft", "--input_data", "bad.jsonl", "--output_data",
                                "x.jsonl", cwd=trained, check=False))
    assert "bad.jsonl:1" in err and "question" in err
    err = user_error(run_script("sample.py", "--out_dir", "out/none", cwd=trained, check=False))
    assert "out/none" in err and "no checkpoint" in err


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


def test_eval_rouge_writes_results_answers_and_figures(trained):
    proc = run_script("eval_rouge.py", "--out_dir", "out/sft", "out/pre", "--test", "test.jsonl", "--output",
                      "out/eval", "--max_new_tokens", "40", cwd=trained)
    results = json.loads((trained / "out/eval/results.json").read_text(encoding="utf-8"))
    assert set(results) == {"out/sft", "out/pre"}
    for r in results.values():
        for key in ("rouge_l_f", "rouge_l_p", "rouge_l_r", "empty_rate", "garbled_rate", "repetition_rate",
                    "truncated_rate", "tokens_per_second", "n", "perplexity", "bits_per_char"):
            assert key in r
        assert r["n"] == 2 and 0 <= r["rouge_l_f"] <= 1 and r["perplexity"] > 1
        assert set(r["groups"]) == {"seen", "corpus_only"}
    rows = [json.loads(line) for line in open(trained / "out/eval/answers.jsonl", encoding="utf-8")]
    assert len(rows) == 2 and set(rows[0]["answers"]) == {"out/sft", "out/pre"}
    from rouge_chinese import Rouge
    for row in rows:  # the file's scores are rouge-chinese's own on the same strings
        a = row["answers"]["out/sft"]
        want = Rouge().get_scores(char_tokens(a["answer"]), char_tokens(row["reference"]))[0]["rouge-l"]["f"] \
            if a["answer"].strip() else 0.0
        assert a["rouge_l_f"] == pytest.approx(want)
    for png in ("metrics.png", "per_question.png"):
        assert (trained / "out/eval" / png).stat().st_size > 1000
    assert "R-L F" in proc.stdout
    again = run_script("eval_rouge.py", "--out_dir", "out/sft", "--test", "test.jsonl", "--output", "out/eval2",
                       "--max_new_tokens", "40", cwd=trained)
    r2 = json.loads((trained / "out/eval2/results.json").read_text(encoding="utf-8"))
    assert r2["out/sft"]["rouge_l_f"] == results["out/sft"]["rouge_l_f"]  # deterministic by default
    assert again.returncode == 0
