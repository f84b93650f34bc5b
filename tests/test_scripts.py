"""sample.py driven by tiny checkpoints made in the session (eval_rouge.py: test_eval.py)."""
import json

from conftest import run_script, user_error, write_jsonl
from engine import Engine, SamplingParams


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
    write_jsonl(trained / "in.jsonl", [{"question": "郭靖是谁？", "id": 7},
                                       {"question": "杨过和谁在一起？", "answer": "小龙女。"}])  # a test file's own
    proc = run_script("sample.py", "--out_dir", "out/sft", "--input_data", "in.jsonl", "--output_data",
                      "answers.jsonl", "--max_new_tokens", "30", cwd=trained)
    rows = [json.loads(line) for line in open(trained / "answers.jsonl", encoding="utf-8")]
    assert [r["question"] for r in rows] == ["郭靖是谁？", "杨过和谁在一起？"] and rows[0]["id"] == 7
    assert all(isinstance(r["answer"], str) for r in rows)
    assert rows[1]["reference"] == "小龙女。" and "reference" not in rows[0] and "'reference' in 1 of them" in proc.stdout
    assert "generated" in proc.stdout.strip().splitlines()[-1]
    (trained / "bad.jsonl").write_text('{"q": "no question field"}\n', encoding="utf-8")
    err = user_error(run_script("sample.py", "--out_dir", "out/sft", "--input_data", "bad.jsonl", "--output_data",
                                "x.jsonl", cwd=trained, check=False))
    assert "bad.jsonl:1" in err and "question" in err
    err = user_error(run_script("sample.py", "--out_dir", "out/none", cwd=trained, check=False))
    assert "out/none" in err and "no checkpoint" in err


def test_chat_asks_a_pretraining_checkpoint_in_the_chat_format(trained):
    """--chat: a pretraining checkpoint's prompt is the rendered conversation, not the bare text; the reply does
    not echo the question as a text completion does."""
    params = SamplingParams(max_new_tokens=20)
    completer, chat = (Engine.from_checkpoint(str(trained / "out" / "pre"), "cpu", chat=c) for c in (None, True))
    assert not completer.is_chat and chat.is_chat
    assert chat.prompt_ids("郭靖是谁？", params)[-1] == chat.tok.assistant_id
    assert completer.prompt_ids("郭靖是谁？", params) == [completer.tok.eot_id] + completer.tok.encode("郭靖是谁？")
    proc = run_script("sample.py", "--out_dir", "out/pre", "--chat", "--start", "郭靖是谁？", "--max_new_tokens", "20",
                      cwd=trained)
    assert "chat model" in proc.stderr and "--- 郭靖是谁？" in proc.stdout
    plain = run_script("sample.py", "--out_dir", "out/pre", "--start", "郭靖是谁？", "--max_new_tokens", "20",
                       cwd=trained)
    assert "text completion" in plain.stderr and "--- 郭靖是谁？" not in plain.stdout
    run_script("eval_rouge.py", "--out_dir", "out/pre", "--chat", "--test", "test.jsonl", "--limit", "2",
               "--output", "eval_chat", cwd=trained)
    assert len((trained / "eval_chat" / "answers.jsonl").read_text(encoding="utf-8").splitlines()) == 2
