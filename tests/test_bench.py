"""The benchmark scripts that compute figures themselves (not just timings): the character-level baseline and the
corpus loss; and that the training-throughput benchmark runs the SFT-shaped step it documents."""
import json
import math
import re

from conftest import run_script, write_jsonl


def test_char_baseline_learns_and_plots_beside_a_training_log(tmp_path):
    text = "郭靖和黄蓉在桃花岛上练武。洪七公教他降龙十八掌。\n\n" * 40 + "杨过与小龙女住在古墓里。\n\n" * 40
    (tmp_path / "novel.txt").write_text(text, encoding="utf-8")
    run_script("bench/char_baseline.py", "novel.txt", "--max_steps", "60", "--lr", "1e-2", "--layers", "1",
               "--width", "32", "--heads", "2", "--block", "32", "--batch", "4", "--eval_batches", "2",
               "--output", "char", cwd=tmp_path)
    saved = json.loads((tmp_path / "char" / "curve.json").read_text(encoding="utf-8"))
    curve = saved["curve"]
    assert curve[0]["step"] == 0 and curve[-1]["step"] == 60
    assert abs(curve[0]["val_bpc"] - math.log2(saved["vocab"])) < 1.5  # untrained: about uniform over the characters
    assert curve[-1]["val_bpc"] < curve[0]["val_bpc"] - 1.0
    log = tmp_path / "run" / "log.jsonl"
    log.parent.mkdir()
    log.write_text("".join(json.dumps({"step": s, "time": s * 3.0, "val_bpc": 9.0 - s}) + "\n" for s in range(4)),
                   encoding="utf-8")
    proc = run_script("bench/char_baseline.py", "--replot", "--output", "char", "--compare", f"mine={log}",
                      cwd=tmp_path)
    assert "MiniGLM: mine after 5 min: 6.000" in proc.stdout
    assert (tmp_path / "char" / "bpc.png").stat().st_size > 1000


def test_char_baseline_without_a_step_budget_trains_for_its_minutes(tmp_path):
    """And with MiniGLM's own model (--arch miniglm) instead of nanoGPT's."""
    (tmp_path / "novel.txt").write_text("郭靖和黄蓉在桃花岛上练武。\n\n" * 60, encoding="utf-8")
    run_script("bench/char_baseline.py", "novel.txt", "--arch", "miniglm", "--minutes", "0.02", "--layers", "1",
               "--width", "32", "--heads", "2", "--block", "16", "--batch", "2", "--lr", "1e-2", "--eval_batches", "1",
               "--output", "char", cwd=tmp_path)
    curve = json.loads((tmp_path / "char" / "curve.json").read_text(encoding="utf-8"))["curve"]
    assert curve[-1]["step"] > 0 and curve[-1]["time"] >= 1.2  # 0.02 minutes of training steps, not none
    assert curve[-1]["val_bpc"] < curve[0]["val_bpc"]


def test_bench_train_times_a_packed_step_with_dropout(tmp_path):
    """The CPU SFT step of BENCHMARKS.md (packed rows, dropout) at a tiny size: it runs and reports a rate."""
    proc = run_script("bench/bench_train.py", "--sizes", "1x32x2x16x2", "--vocab_size", "64", "--packed", "--dropout",
                      "0.1", "--attn_dropout", "0.1", "--dtypes", "float32", "--steps", "2", cwd=tmp_path)
    assert "packed True, dropout 0.1, attn_dropout 0.1" in proc.stdout
    row = proc.stdout.strip().splitlines()[-1].split()
    assert row[:3] == ["1", "x", "32"] and float(row[-3].replace(",", "")) > 0  # tokens/s


def test_bench_train_compares_optimizers(tmp_path):
    proc = run_script("bench/bench_train.py", "--sizes", "1x32x2x16x2", "--vocab_size", "64", "--dtypes", "float32",
                      "--optimizers", "adamw", "muon", "--steps", "2", cwd=tmp_path)
    rows = [line.split() for line in proc.stdout.strip().splitlines()[-2:]]
    assert [r[-5] for r in rows] == ["adamw", "muon"] and all(float(r[-3].replace(",", "")) > 0 for r in rows)


def test_bench_train_takes_turns_over_rounds_of_every_configuration(tmp_path, monkeypatch):
    """--rounds times each configuration (here fused and unfused AdamW at two loss chunk sizes) that often, in turns,
    and reports the median round and the range; the chunk size reaches the model's loss."""
    import model
    chunk_rows = []
    real = model.linear_cross_entropy
    monkeypatch.setattr(model, "linear_cross_entropy", lambda *a: chunk_rows.append(a[-1]) or real(*a))
    proc = run_script("bench/bench_train.py", "--sizes", "1x32x2x16x2", "--vocab_size", "64", "--dtypes", "float32",
                      "--optimizers", "adamw", "adamw_unfused", "--loss_chunks", "8", "32", "--rounds", "3",
                      "--steps", "2", cwd=tmp_path)
    rows = [line.split("(")[0].split() for line in proc.stdout.strip().splitlines()[-4:]]
    assert [(r[-5], r[-4]) for r in rows] == [("adamw", "8"), ("adamw", "32"), ("adamw_unfused", "8"),
                                              ("adamw_unfused", "32")]
    assert all(line.endswith("over 3 rounds)") for line in proc.stdout.strip().splitlines()[-4:])
    low, high = (float(x.replace(",", "")) for x in proc.stdout.strip().splitlines()[-1].split("(")[1].split()[0]
                 .split("-"))
    assert 0 < low <= float(rows[-1][-3].replace(",", "")) <= high
    # four configurations, two warm-up steps and three rounds of two steps each: 32 losses, in turns
    assert chunk_rows == [8] * 2 + [32] * 2 + [8] * 2 + [32] * 2 + ([8] * 2 + [32] * 2) * 6


def test_profile_cpu_times_matmuls_profiles_both_steps_and_the_loss_chunks(tmp_path):
    proc = run_script("bench/profile_cpu.py", "--layers", "1", "--width", "32", "--heads", "2", "--vocab", "256",
                      "--rows", "32", "--steps", "1", cwd=tmp_path)
    out = proc.stdout
    rates = [float(line.split(": ")[1].split()[0]) for line in out.splitlines() if line.startswith("matmul (")]
    assert len(rates) == 4 and all(r > 0 for r in rates)
    assert "pretraining step (8 x 32)" in out and "packed SFT step (4 x 16)" in out
    assert out.count("aten::mm") >= 2  # one profiler table for each kind of step
    assert [line.split(" chunks of ")[1].split(":")[0] for line in out.splitlines() if " chunks of " in line] == \
        ["2048", "1024", "512", "256", "128"]


def test_corpus_loss_is_lower_for_the_model_that_read_the_corpus(trained):
    """bench/corpus_loss.py: the pretrained tiny model models its corpus better than a uniform guess does."""
    proc = run_script("bench/corpus_loss.py", "out/pre/latest", "--dataset", "tiny", "--windows", "4",
                      "--length", "64", cwd=trained)
    row = proc.stdout.strip().splitlines()[-1].split()
    train_loss, uniform = float(row[1]), float(row[-1].rstrip(")"))
    assert row[0] == "out/pre/latest" and 0 < train_loss < uniform - 1.0


def test_recall_keys_counts_the_keys_it_finds_in_the_corpus(trained):
    """bench/recall_keys.py: prompts only for keys the corpus contains, and reports a share for each group."""
    write_jsonl(trained / "keys.jsonl", [
        {"question": "郭靖最擅长什么？", "answer": "降龙十八掌。", "group": "seen", "keys": ["降龙十八掌"]},
        {"question": "谁是虚竹？", "answer": "虚竹是少林僧人。", "group": "corpus_only", "keys": ["虚竹|慧轮"]}])
    proc = run_script("bench/recall_keys.py", "out/pre/latest", "--test", "keys.jsonl", "--corpus",
                      "data/tiny/corpus", "--context", "20", cwd=trained)
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("1 of 2 keys found")
    assert lines[1].split()[1:] == ["seen"]
    share = float(lines[2].split()[1])
    assert lines[2].startswith("out/pre/latest") and 0.0 <= share <= 1.0
    # with the chat answers: each found key counted once, as recalled or not, and the answer's hit with it
    write_jsonl(trained / "answers.jsonl", [
        {"question": "郭靖最擅长什么？", "reference": "降龙十八掌。", "answers": {"m": {"answer": "他最擅长降龙十八掌。"}}},
        {"question": "谁是虚竹？", "reference": "虚竹是少林僧人。", "answers": {"m": {"answer": "不知道。"}}}])
    proc = run_script("bench/recall_keys.py", "out/pre/latest", "--test", "keys.jsonl", "--corpus",
                      "data/tiny/corpus", "--context", "20", "--answers", "answers.jsonl", cwd=trained)
    split = [line.split("answers hold ")[1].split()[0] for line in proc.stdout.splitlines() if "answers hold" in line]
    assert len(split) == 2 and sorted(split) == ["0/0", "1/1"]
    bad = run_script("bench/recall_keys.py", "out/pre/latest", "--test", "keys.jsonl", "--answers", "keys.jsonl",
                     cwd=trained, check=False)
    assert bad.returncode != 0 and "keys.jsonl:1" in bad.stderr and "Traceback" not in bad.stderr


def test_recall_keys_framed_continues_the_reference_after_the_question(trained):
    """bench/recall_keys.py --framed: a chat checkpoint also continues each reference up to its key (a reference
    that opens with the key gives no prompt); a pretrained checkpoint gets no such line."""
    write_jsonl(trained / "framed.jsonl", [
        {"question": "郭靖最擅长什么？", "answer": "郭靖最擅长降龙十八掌。", "group": "seen", "keys": ["降龙十八掌"]},
        {"question": "郭靖会什么？", "answer": "降龙十八掌。", "group": "seen", "keys": ["降龙十八掌"]}])
    proc = run_script("bench/recall_keys.py", "out/pre/latest", "out/sft/latest", "--test", "framed.jsonl",
                      "--corpus", "data/tiny/corpus", "--context", "20", "--framed", cwd=trained)
    lines = proc.stdout.strip().splitlines()
    framed = [line for line in lines if line.startswith("  framed by the reference")]
    assert len(framed) == 1 and lines.index(framed[0]) == len(lines) - 1  # after the SFT checkpoint's row only
    share, count = framed[0].split()[-2:]
    assert 0.0 <= float(share) <= 1.0 and count in ("(0/1)", "(1/1)")


def test_lookup_baseline_answers_with_the_nearest_training_question(tmp_path):
    """bench/lookup_baseline.py: a reworded question gets the answer of the training question it shares most with,
    scored per group; and it counts how often a model's answers equal the looked-up ones."""
    write_jsonl(tmp_path / "sft.jsonl", [
        {"question": "郭靖的父亲是谁？", "answer": "郭靖的父亲是郭啸天。"},
        {"question": "郭靖的师父有哪些人？", "answer": "郭靖先后拜江南七怪和洪七公为师。"},
        {"question": "黄蓉的父亲是谁？", "answer": "黄蓉的父亲是东邪黄药师。"}])
    write_jsonl(tmp_path / "test.jsonl", [
        {"question": "谁是郭靖的父亲？", "answer": "郭啸天。", "group": "seen", "keys": ["郭啸天"]},
        {"question": "黄蓉她爹叫什么？", "answer": "黄药师。", "group": "seen", "keys": ["黄药师"]},
        {"question": "郭靖的师父都是谁？", "answer": "江南七怪和洪七公。", "group": "corpus_only", "keys": ["丘处机"]}])
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(
        {"question": q, "answers": {"m": {"answer": a}}}, ensure_ascii=False) + "\n" for q, a in [
        ("谁是郭靖的父亲？", "郭靖的父亲是郭啸天。"), ("黄蓉她爹叫什么？", "郭靖的父亲是郭啸天。"),
        ("郭靖的师父都是谁？", "丘处机教过郭靖。")]), encoding="utf-8")
    proc = run_script("bench/lookup_baseline.py", "--sft", "sft.jsonl", "--test", "test.jsonl", "--answers",
                      "answers.jsonl", cwd=tmp_path)
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()[2:4]}
    assert rows["seen"][:2] == ["2", "1.000"] and float(rows["seen"][3]) == 0.5
    assert rows["corpus_only"][:2] == ["1", "0.000"] and float(rows["corpus_only"][3]) == 0.0
    # right answers by origin: the right `seen` one repeats an SFT answer, the right `corpus_only` one is new text
    origin = {line.split()[1]: line.split()[2:] for line in proc.stdout.splitlines() if line.startswith("(1) ")}
    assert origin["seen"] == ["2", "1", "1", "0"] and origin["corpus_only"] == ["1", "1", "0", "1"]


def test_ensemble_of_one_model_answers_as_that_model_and_runs_over_several(trained):
    """bench/ensemble.py averages next-token probabilities: one model alone must give Engine's own greedy answers
    (the wrapper and the other models' KV caches change nothing); several answer every question."""
    from engine import Engine, SamplingParams
    run_script("bench/ensemble.py", "out/sft", "--test", "test.jsonl", "--output", "out/ens1.json", cwd=trained)
    one = json.loads((trained / "out/ens1.json").read_text(encoding="utf-8"))
    questions = [a["question"] for a in one["answers"]]
    engine = Engine.from_checkpoint(str(trained / "out/sft"), device="cpu")
    assert [a["answer"] for a in one["answers"]] == engine.reply_batch(questions, SamplingParams(temperature=0.0))
    assert one["groups"]["seen"]["n"] == 1 and one["groups"]["corpus_only"]["n_keyed"] == 0
    run_script("bench/ensemble.py", "out/sft", "out/sft/latest", "out/pre", "--test", "test.jsonl", "--output",
               "out/ens3.json", cwd=trained)
    three = json.loads((trained / "out/ens3.json").read_text(encoding="utf-8"))
    assert three["checkpoints"] == ["out/sft", "out/sft/latest", "out/pre"]
    assert [a["question"] for a in three["answers"]] == questions and all(a["answer"] for a in three["answers"])
    # MC dropout: copies of the first model without noise answer as it does; with noise, their dropout draws
    run_script("bench/ensemble.py", "out/sft", "--dropout_copies", "2", "--dropout", "0", "--test", "test.jsonl",
               "--output", "out/ens_mc.json", cwd=trained)
    mc = json.loads((trained / "out/ens_mc.json").read_text(encoding="utf-8"))
    assert mc["dropout_copies"] == 2 and mc["answers"] == one["answers"]


def test_ensemble_members_with_dropout_draw_it_in_eval_mode(trained):
    import os
    import sys
    import torch
    from checkpoint import load_checkpoint
    from conftest import REPO
    sys.path.insert(0, os.path.join(REPO, "bench"))
    from ensemble import Ensemble
    models = [load_checkpoint(str(trained / "out/sft"))[0] for _ in range(2)]
    models[1].set_dropout(0.5, 0.0)
    idx = torch.randint(0, models[0].config.vocab_size, (2, 12))
    quiet = Ensemble(models).eval()
    assert torch.equal(quiet(idx)[0], quiet(idx)[0])
    noisy = Ensemble(models, noisy=[1]).eval()  # the same members: eval() leaves member 1's dropout on
    assert not torch.equal(noisy(idx)[0], noisy(idx)[0])
    assert not models[0].training and not any(m.training for m in models[0].modules())


def test_book_questions_are_new_and_each_has_a_right_sft_answer(trained):
    """bench/book_questions.py: no probe is a question of the default data; for each, some SFT answer counts as
    right and another book's answer does not; and it scores a checkpoint."""
    import os
    import sys
    from conftest import REPO
    sys.path.insert(0, os.path.join(REPO, "bench"))
    from book_questions import QUESTIONS, right
    from data_utils import load_conversations
    data = os.path.join(REPO, "data", "jinyong")
    asked, answers = set(), set()
    for name in ("sft.jsonl", "test.jsonl", "sft_wordings.jsonl"):
        convs, _, _ = load_conversations(os.path.join(data, name))
        asked |= {t["content"] for c in convs for t in c if t["role"] == "user"}
        if name == "sft.jsonl":
            answers = {c[1]["content"] for c in convs if len(c) == 2}
    for question, mark in QUESTIONS:
        assert question not in asked, question
        assert any(right(question, a, mark) for a in answers), question
    assert not right("神雕侠侣的主角是谁？", "《射雕英雄传》的男主角是郭靖，杨过是《神雕侠侣》的男主角。",
                     "杨过是《神雕侠侣》的男主角")
    proc = run_script("bench/book_questions.py", "out/sft", "--json", "book.json", cwd=trained)
    counts = json.loads((trained / "book.json").read_text(encoding="utf-8"))["out/sft"]
    assert proc.stdout.strip().endswith(f"{counts['book_questions']}/{len(QUESTIONS)} whole-book questions reach the "
                                        f"right answer; {counts['course_questions']}/4 course questions hold every "
                                        "key fact, as finished text")
    wrong = [line for line in proc.stdout.splitlines() if line.startswith("  WRONG  ")]
    # every question is either counted right or shown wrong
    assert counts["book_questions"] + sum("course: " not in w for w in wrong) == len(QUESTIONS)
    assert counts["course_questions"] + sum("course: " in w for w in wrong) == counts["n_course_questions"] == 4


def test_reply_prefixes_finds_where_replies_part(workdir):
    """bench/reply_prefixes.py: the positions where replies sharing a prefix take different next tokens."""
    import importlib
    reply_prefixes = importlib.import_module("bench.reply_prefixes")
    a, b, c = (1, 2, 3, 4), (1, 2, 5, 6), (7, 8)
    assert reply_prefixes.branch_positions({a, b, c}) == {a: [0, 2], b: [0, 2], c: [0]}
    proc = run_script("bench/reply_prefixes.py", "--dataset", "tiny", "--first", "1", cwd=workdir)
    n = int(proc.stdout.split(" distinct replies")[0])
    assert n >= 2 and "beyond the first 1 tokens:" in proc.stdout


def test_permute_text_shuffles_whole_sentences_within_each_section(tmp_path):
    """bench/permute_text.py: the same sentences in each section (a quotation kept whole), in another order that
    --seed changes and a rerun repeats; headers stay where they were."""
    src = tmp_path / "src"
    src.mkdir()
    first = ["郭靖生于蒙古。", "他学了降龙十八掌。", "洪七公说：“好小子。你学得快！”", "他娶了黄蓉？", "后来守襄阳。",
             "他有三个孩子。"]
    second = ["杨过断了一臂。", "他练成玄铁剑法。"]
    text = f"【郭靖】\n\n{''.join(first[:3])}\n\n{''.join(first[3:])}\n\n【杨过】\n\n{''.join(second)}\n"
    (src / "kb.txt").write_text(text, encoding="utf-8")
    outs = []
    for seed in ("0", "0", "1"):
        run_script("bench/permute_text.py", "src", "dst", "--seed", seed, cwd=tmp_path)
        outs.append((tmp_path / "dst" / "kb.txt").read_text(encoding="utf-8"))
    assert outs[0] == outs[1] and outs[0] != outs[2]
    for out in outs:
        head, body_a, body_b = re.split(r"【郭靖】|【杨过】", out)
        assert head == "" and len([p for p in body_a.split("\n") if p]) == 2
        assert sorted(s for s in first if s in body_a) == sorted(first)
        assert len(body_a.replace("\n", "")) == len("".join(first)) and all(s in body_b for s in second)
    assert any("".join(first) not in o.replace("\n", "") for o in outs)


def test_fullname_text_names_the_sections_person_only(tmp_path):
    """bench/fullname_text.py: a sentence-opening pronoun of the section's person becomes the name; a pronoun for
    someone else, a pronoun inside a sentence, a group section and a story file stay as they were."""
    src = tmp_path / "src"
    src.mkdir()
    people = ("【黄蓉（《神雕侠侣》中）】\n\n黄蓉是黄药师的女儿。她聪明伶俐。她嫁给郭靖，他忠厚老实。\n\n"
              "【四大恶人】\n\n他们横行江湖。他排行第一。\n")
    (src / "kb_people.txt").write_text(people, encoding="utf-8")
    (src / "kb_story.txt").write_text("【华山论剑】\n\n他赢了。\n", encoding="utf-8")
    proc = run_script("bench/fullname_text.py", "src", "dst", cwd=tmp_path)
    assert "2 pronouns replaced" in proc.stdout
    out = (tmp_path / "dst" / "kb_people.txt").read_text(encoding="utf-8")
    assert "黄蓉聪明伶俐。黄蓉嫁给郭靖，他忠厚老实。" in out
    assert out.endswith("【四大恶人】\n\n他们横行江湖。他排行第一。\n")
    assert (tmp_path / "dst" / "kb_story.txt").read_text(encoding="utf-8") == "【华山论剑】\n\n他赢了。\n"


def test_subset_corpus_keeps_the_sections_holding_the_keys_and_scores_them(tmp_path):
    """bench/subset_corpus.py: `write` keeps, in every folder, the shortest section holding each chosen question's
    keys until --share of the characters; `score` splits corpus_only key accuracy by covered or not."""
    src = tmp_path / "corpus"
    src.mkdir()
    (src / "kb.txt").write_text("【虚竹】\n\n虚竹的师父是慧轮。\n\n【少林寺】\n\n" + "少林寺在嵩山，虚竹和慧轮都在寺中。" * 5
                                + "\n\n【段誉】\n\n段誉会六脉神剑。\n\n【郭靖】\n\n郭靖会降龙十八掌。\n", encoding="utf-8")
    write_jsonl(tmp_path / "test.jsonl", [
        {"question": "虚竹的师父是谁？", "answer": "慧轮。", "group": "corpus_only", "keys": ["慧轮"]},
        {"question": "段誉会什么？", "answer": "六脉神剑。", "group": "corpus_only", "keys": ["六脉神剑"]},
        {"question": "郭靖会什么？", "answer": "降龙十八掌。", "group": "seen", "keys": ["降龙十八掌"]}])
    for share, kept in (("0.01", 1), ("0.5", 2)):
        proc = run_script("bench/subset_corpus.py", "write", "corpus", "sub", "--sections_from", "corpus",
                          "--test", "test.jsonl", "--share", share, cwd=tmp_path)
        covered = json.loads((tmp_path / "sub" / "covered.json").read_text(encoding="utf-8"))
        text = (tmp_path / "sub" / "kb.txt").read_text(encoding="utf-8")
        assert f"{kept} sections kept" in proc.stdout and len(covered["sections"]) == kept
        assert "少林寺" not in text and "郭靖" not in text and text.startswith("【")  # the longer and the seen one dropped
        assert set(covered["sections"]) <= {"【虚竹】", "【段誉】"} and len(covered["questions"]) == kept
    assert text.count("【") == 2
    write_jsonl(tmp_path / "answers.jsonl", [
        {"question": q, "group": g, "keys": [k], "answers": {"m": {"answer": "", "correct": ok}}}
        for q, g, k, ok in (("虚竹的师父是谁？", "corpus_only", "慧轮", True), ("段誉会什么？", "corpus_only", "六脉神剑", False),
                            ("郭靖会什么？", "seen", "降龙十八掌", True))])
    run_script("bench/subset_corpus.py", "write", "corpus", "sub", "--sections_from", "corpus", "--test", "test.jsonl",
               "--share", "0.01", "--seed", "0", cwd=tmp_path)
    first = json.loads((tmp_path / "sub" / "covered.json").read_text(encoding="utf-8"))["questions"][0]
    row = run_script("bench/subset_corpus.py", "score", "sub/covered.json", "answers.jsonl",
                     cwd=tmp_path).stdout.strip().splitlines()[-1]
    expected = ("1.000 (1/1)", "0.000 (0/1)") if first == "虚竹的师父是谁？" else ("0.000 (0/1)", "1.000 (1/1)")
    assert row.split()[1:] == " ".join(expected).split()


def test_open_book_puts_the_paragraph_that_holds_the_answer_before_each_question(tmp_path):
    """bench/open_book.py: `coverage` counts test questions whose keys the BM25-retrieved paragraph holds; `write`
    leads every user turn with the paragraph retrieved for the questions so far, keeping groups and keys."""
    data = tmp_path / "d"
    (data / "corpus").mkdir(parents=True)
    (data / "corpus" / "kb.txt").write_text(
        "【虚竹】\n\n虚竹是少林寺的小和尚，师父是慧轮。\n\n虚竹后来做了逍遥派掌门。\n\n"
        "【段誉】\n\n段誉是大理王子，会六脉神剑和凌波微步。\n", encoding="utf-8")
    for name in ("tokenizer.json", "meta.json"):
        (data / name).write_text("{}", encoding="utf-8")
    rows = [{"question": "虚竹的师父是谁？", "answer": "慧轮。", "group": "corpus_only", "keys": ["慧轮"]},
            {"question": "段誉会什么武功？", "answer": "六脉神剑。", "group": "corpus_only", "keys": ["降龙十八掌"]}]
    write_jsonl(data / "test.jsonl", rows)
    write_jsonl(data / "sft.jsonl", [{"messages": [
        {"role": "user", "content": "介绍一下段誉"}, {"role": "assistant", "content": "大理王子。"},
        {"role": "user", "content": "他会什么武功？"}, {"role": "assistant", "content": "六脉神剑。"}]}])
    write_jsonl(data / "sft_wordings.jsonl", [{"question": "这个呢？", "answer": "他做了逍遥派掌门。"}])
    proc = run_script("bench/open_book.py", "coverage", "d", cwd=tmp_path)
    assert "corpus_only    keys in the retrieved paragraph: 0.500 (1/2)" in proc.stdout
    assert "sft (--gold)   reply supported by the paragraph: 1.000 (1/1)" in proc.stdout
    run_script("bench/open_book.py", "write", "d", "ob", cwd=tmp_path)
    test = [json.loads(line) for line in (tmp_path / "ob" / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert test[0]["messages"][0]["content"] == "资料：【虚竹】虚竹是少林寺的小和尚，师父是慧轮。\n问题：虚竹的师父是谁？"
    assert [t["group"] for t in test] == ["corpus_only"] * 2 and test[1]["keys"] == ["降龙十八掌"]
    sft = json.loads((tmp_path / "ob" / "sft.jsonl").read_text(encoding="utf-8"))["messages"]
    assert sft[2]["content"].startswith("资料：【段誉】") and sft[2]["content"].endswith("问题：他会什么武功？")
    assert [t["content"] for t in sft[1::2]] == ["大理王子。", "六脉神剑。"]
    assert (tmp_path / "ob" / "tokenizer.json").exists()
    (data / "meta.json").unlink()
    proc = run_script("bench/open_book.py", "write", "d", "ob", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "meta.json: no such file" in proc.stderr and "Traceback" not in proc.stderr
    (data / "meta.json").write_text("{}", encoding="utf-8")
    wording = json.loads((tmp_path / "ob" / "sft_wordings.jsonl").read_text(encoding="utf-8"))["messages"][0]
    assert wording["content"].startswith("资料：【虚竹】虚竹是少林寺")  # nothing matches: the first paragraph
    (data / "sft_extra").mkdir()
    write_jsonl(data / "sft_extra" / "facts.jsonl", [{"question": "这个呢？", "answer": "凌波微步。"}])
    run_script("bench/open_book.py", "write", "d", "gold", "--gold", "--extra", "facts.jsonl",
               cwd=tmp_path)  # SFT rows retrieve with the reply
    fact = json.loads((tmp_path / "gold" / "facts.jsonl").read_text(encoding="utf-8"))["messages"][0]
    assert fact["content"].startswith("资料：【段誉】")
    wording = json.loads((tmp_path / "gold" / "sft_wordings.jsonl").read_text(encoding="utf-8"))["messages"][0]
    assert wording["content"] == "资料：【虚竹】虚竹后来做了逍遥派掌门。\n问题：这个呢？"
    assert (tmp_path / "gold" / "test.jsonl").read_text(encoding="utf-8") == \
        (tmp_path / "ob" / "test.jsonl").read_text(encoding="utf-8")


def test_subset_corpus_mix_reads_the_chosen_sections_more_often_and_asks_about_their_other_facts(tmp_path):
    """bench/subset_corpus.py mix: the .txt files are the corpus and re-telling plus --copies more copies of the chosen
    sections; sft.jsonl is the source plus the extra rows about those sections, once per opening, leaving out rows
    about other sections and rows that would teach a test answer."""
    data = tmp_path / "d"
    for folder, text in (("corpus", "【虚竹】\n\n虚竹的师父是慧轮，虚竹会天山六阳掌。\n\n【段誉】\n\n段誉会六脉神剑。\n\n"
                                     "【郭靖】\n\n郭靖会降龙十八掌。\n"),
                         ("rewrites", "【虚竹】\n\n慧轮是虚竹的师父。\n\n【段誉】\n\n六脉神剑是段誉的武功。\n")):
        (data / folder).mkdir(parents=True)
        (data / folder / f"kb_{folder}.txt").write_text(text, encoding="utf-8")
    (data / "tokenizer.json").write_text("{}", encoding="utf-8")
    write_jsonl(data / "test.jsonl", [
        {"question": "虚竹的师父是谁？", "answer": "慧轮。", "group": "corpus_only", "keys": ["慧轮"]}])
    write_jsonl(data / "sft.jsonl", [{"question": "段誉是谁？", "answer": "大理王子。"}])
    write_jsonl(data / "sft_wordings.jsonl", [{"question": "虚竹会什么掌法？", "answer": "天山六阳掌。", "book": "天龙八部"},
                                              {"question": "段誉会什么？", "answer": "六脉神剑。"}])
    (data / "sft_extra").mkdir()
    write_jsonl(data / "sft_extra" / "single_facts.jsonl", [{"question": "虚竹拜谁为师？", "answer": "慧轮。"}])
    proc = run_script("bench/subset_corpus.py", "mix", "d", "mx", "--copies", "3", "--share", "0.01", cwd=tmp_path)
    assert "1 Q&A rows about them" in proc.stdout and "(1 left out" in proc.stdout
    text = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "mx").glob("*.txt")}
    assert len(text) == 2 + 2 * 3 and text["kb_corpus.txt"].count("【") == 3
    assert text["cov02_kb_rewrites.txt"] == "【虚竹】\n\n慧轮是虚竹的师父。\n"
    rows = [json.loads(line) for line in (tmp_path / "mx" / "sft.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0] == {"question": "段誉是谁？", "answer": "大理王子。"} and len(rows) == 1 + 4
    assert [r["messages"][0]["content"] for r in rows[1:]] == [
        "虚竹会什么掌法？", "请问虚竹会什么掌法？", "我想知道，虚竹会什么掌法？", "问一下：虚竹会什么掌法？"]
    assert rows[1]["messages"][1]["content"] == "天山六阳掌。" and rows[1]["book"] == "天龙八部"
    assert json.loads((tmp_path / "mx" / "covered.json").read_text(encoding="utf-8"))["sections"] == ["【虚竹】"]
    run_script("bench/subset_corpus.py", "mix", "d", "alone", "--copies", "0", "--share", "0.01", "--only_kept",
               cwd=tmp_path)
    text = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "alone").glob("*.txt")}
    assert text == {"kb_corpus.txt": "【虚竹】\n\n虚竹的师父是慧轮，虚竹会天山六阳掌。\n", "kb_rewrites.txt": "【虚竹】\n\n慧轮是虚竹的师父。\n"}
    assert (tmp_path / "alone" / "sft.jsonl").read_text(encoding="utf-8").splitlines() == \
        (tmp_path / "mx" / "sft.jsonl").read_text(encoding="utf-8").splitlines()[1:]
    (data / "sft_wordings.jsonl").unlink()
    proc = run_script("bench/subset_corpus.py", "mix", "d", "mx", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "sft_wordings.jsonl: no such file" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "mx" / "sft.jsonl").exists()  # the earlier output stays whole
    write_jsonl(data / "sft_wordings.jsonl", [])
    proc = run_script("bench/subset_corpus.py", "mix", "d", "mx", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "mx: exists and is not empty" in proc.stderr  # no stale copies beside new ones


def test_synthetic_people_tells_each_invented_person_several_ways_and_asks_about_most(tmp_path):
    """bench/synthetic_people.py: the corpus and re-telling copied, --bios files each telling every invented person
    once with all seven attributes, names absent from the source, questions about the people not held out appended
    to the source's sft.jsonl, and the held-out people's questions, with keys, in test_synthetic.jsonl."""
    data = tmp_path / "d"
    for folder, text in (("corpus", "【郭靖】\n\n郭靖会降龙十八掌。\n"), ("rewrites", "【郭靖】\n\n降龙十八掌是郭靖的武功。\n")):
        (data / folder).mkdir(parents=True)
        (data / folder / f"kb_{folder}.txt").write_text(text, encoding="utf-8")
    (data / "tokenizer.json").write_text("{}", encoding="utf-8")
    write_jsonl(data / "sft.jsonl", [{"question": "郭靖是谁？", "answer": "射雕的主角。"}])
    write_jsonl(data / "sft_wordings.jsonl", [{"question": "郭靖是什么人？", "answer": "射雕的主角。"}])
    write_jsonl(data / "test.jsonl", [{"question": "郭靖会什么？", "answer": "降龙十八掌。", "group": "seen"}])
    proc = run_script("bench/synthetic_people.py", "d", "sy", "--people", "20", "--bios", "2", "--held_out", "0.25",
                      cwd=tmp_path)
    assert "20 invented people, 2 tellings each" in proc.stdout
    out = tmp_path / "sy"
    people = json.loads((out / "people.json").read_text(encoding="utf-8"))
    assert len(people) == 20 and len({p["name"] for p in people}) == 20
    source = "".join((data / f).read_text(encoding="utf-8") for f in (
        "corpus/kb_corpus.txt", "rewrites/kb_rewrites.txt", "sft.jsonl", "sft_wordings.jsonl", "test.jsonl"))
    assert all(p["name"] not in source and p["name"][:2] not in source for p in people)
    assert (out / "kb_corpus.txt").read_text(encoding="utf-8") == "【郭靖】\n\n郭靖会降龙十八掌。\n"
    for k in (1, 2):
        sections = (out / f"synthetic_people_{k}.txt").read_text(encoding="utf-8").split("【")[1:]
        assert sorted(s.split("】")[0] for s in sections) == sorted(p["name"] for p in people)
        for p in people:
            body = next(s for s in sections if s.startswith(p["name"] + "】"))
            assert all(p[a] in body for a in ("nick", "sect", "master", "weapon", "skill", "home", "father"))
    rows = [json.loads(line) for line in (out / "sft.jsonl").read_text(encoding="utf-8").splitlines()]
    held = [json.loads(line) for line in (out / "test_synthetic.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0] == {"question": "郭靖是谁？", "answer": "射雕的主角。"}
    assert len(rows) == 1 + 15 * 8 and len(held) == 5 * 8
    held_names = {p["name"] for p in people if any(r["question"].startswith(p["name"]) or p["name"] in r["question"]
                                                   for r in held)}
    assert len(held_names) == 5 and not any(n in r["question"] for r in rows for n in held_names)
    assert all(r["group"] == "synthetic_held_out" and all(k in r["answer"] for k in r["keys"]) for r in held)
    run_script("bench/synthetic_people.py", "d", "alone", "--people", "20", "--bios", "2", "--held_out", "0.25",
               "--only_synthetic", cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "alone").glob("*.txt")) == ["synthetic_people_1.txt",
                                                                         "synthetic_people_2.txt"]
    assert (tmp_path / "alone" / "sft.jsonl").read_text(encoding="utf-8").splitlines() == \
        (out / "sft.jsonl").read_text(encoding="utf-8").splitlines()[1:]  # the same people, without the source's rows
    proc = run_script("bench/synthetic_people.py", "d", "sy", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "sy: exists and is not empty" in proc.stderr and "Traceback" not in proc.stderr
    (data / "test.jsonl").unlink()
    proc = run_script("bench/synthetic_people.py", "d", "sy2", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "test.jsonl: no such file" in proc.stderr and not (tmp_path / "sy2").exists()


def _quality_run(root, name, seed, key, refusals, sft_seconds):
    """The files bench/quality.sh leaves for one seed: the evaluation, the book questions, the SFT log and best/."""
    run = root / f"{name}_s{seed}"
    (run / "eval").mkdir(parents=True)
    (run / "sft" / "best").mkdir(parents=True)
    results = {"key_accuracy": key, "rouge_l_f": 0.4, "in_domain_refusal_rate": refusals / 200, "n_in_domain": 200,
               "ood_decline_rate": 0.8, "groups": {"seen": {"rouge_l_f": 0.5, "key_accuracy": key + 0.2}}}
    (run / "eval" / "results.json").write_text(json.dumps({f"{run}/sft": results}), encoding="utf-8")
    book = {"book_questions": 20 + int(seed) % 5, "course_questions": 4}
    (run / "eval" / "book_questions.json").write_text(json.dumps({f"{run}/sft": book}), encoding="utf-8")
    (run / "sft" / "log.jsonl").write_text(
        json.dumps({"step": 0, "time": 0.0}) + "\n" + json.dumps({"step": 90, "time": sft_seconds}) + "\n{\"step\": 9",
        encoding="utf-8")  # the last line torn, as a crash leaves it
    (run / "sft" / "best" / "config.json").write_text(json.dumps({"step": 80}), encoding="utf-8")


def test_quality_summary_takes_every_seed_of_the_name_from_earlier_calls_too(tmp_path):
    root = tmp_path / "out" / "exp"
    _quality_run(root, "arm", "1337", 0.50, 4, 900.0)
    _quality_run(root, "arm", "2", 0.60, 2, 1000.0)
    _quality_run(root, "arm2", "3", 0.10, 9, 10.0)  # another name that starts the same: not one of arm's seeds
    (root / "arm_s7").mkdir()                        # a seed still training: no evaluation yet
    proc = run_script("bench/quality_summary.py", "arm", "2", cwd=tmp_path)  # this call ran seed 2 only
    assert "over seeds 2 1337" in proc.stderr
    summary = json.loads((root / "arm.json").read_text(encoding="utf-8"))
    assert summary["all.key_accuracy"] == {"2": 0.60, "1337": 0.50, "mean": 0.55}
    assert summary["in_domain_refusals"] == {"2": 2, "1337": 4, "mean": 3.0}
    assert summary["sft_seconds"]["mean"] == 950.0 and summary["sft_best_step"]["1337"] == 80
    assert summary["book_questions"] == {"2": 22, "1337": 22, "mean": 22.0}
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["run", "seen", "key", "seen_key"]
    assert lines[-1].split()[:3] == ["arm", "mean", "0.500"] and len(lines) == 4
    missing = run_script("bench/quality_summary.py", "arm", "5", cwd=tmp_path, check=False)
    assert missing.returncode != 0 and "arm_s5/eval" in missing.stderr and "Traceback" not in missing.stderr
