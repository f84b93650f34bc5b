"""prepare_sft.py: the accepted formats, the loss mask, and errors on bad input."""
import csv
import json
import os

import numpy as np
import pytest

from conftest import run_script, user_error, write_jsonl
from data_utils import DataError, load_conversations
from tokenizer import Tokenizer, render_conversation, render_for_reply

CONV = [{"role": "system", "content": "你是金庸小说专家。"},
        {"role": "user", "content": "介绍一下郭靖"}, {"role": "assistant", "content": "郭靖是《射雕英雄传》的主角。"},
        {"role": "user", "content": "那他的师父是谁？"}, {"role": "assistant", "content": "郭靖的师父是洪七公。"}]


@pytest.fixture(scope="module")
def tok(workdir):
    return Tokenizer.load(workdir / "data" / "tiny" / "tokenizer.json")


def test_mask_selects_exactly_the_replies_and_their_end_tokens(tok):
    for conv in (CONV[1:3], CONV):
        ids, mask = render_conversation(tok, conv)
        assert len(ids) == len(mask)
        y, m = ids[1:], mask[1:]
        learned = [t for t, k in zip(y, m) if k]
        replies = [t for t in conv if t["role"] == "assistant"]
        expected = []
        for r in replies:
            expected += tok.encode(r["content"]) + [tok.end_id]
        assert learned == expected
        assert tok.decode([t for t in learned if t != tok.end_id]) == "".join(r["content"] for r in replies)


def test_all_accepted_formats_give_the_same_conversation(tmp_path):
    q, a = "郭靖是谁？", "郭靖是《射雕英雄传》的主角。"
    files = {"pairs.jsonl": [{"question": q, "answer": a}], "caps.jsonl": [{"Question": q, "Answer": a}],
             "qa.jsonl": [{"q": q, "a": a}], "prompt.jsonl": [{"prompt": q, "response": a}],
             "inst.jsonl": [{"instruction": q, "input": "", "output": a}],
             "conv.jsonl": [{"conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}],
             "msgs.jsonl": [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}]}
    for name, recs in files.items():
        write_jsonl(tmp_path / name, recs)
    (tmp_path / "array.json").write_text(json.dumps([{"question": q, "answer": a}], ensure_ascii=False), "utf-8")
    for name, delim in (("t.csv", ","), ("t.tsv", "\t")):
        with open(tmp_path / name, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter=delim)
            w.writerows([["question", "answer"], [q, a]])
    want = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    for name in list(files) + ["array.json", "t.csv", "t.tsv"]:
        convs, _, _ = load_conversations(str(tmp_path / name))
        assert convs == [want], name


BAD = [('{"question": "a", "answer": ', "malformed JSON"),
       ('{"question": "a"}', "missing field 'answer'"),
       ('{"question": "a", "answer": ""}', "empty"),
       ('{"question": "a", "answer": 3}', "must be a string"),
       ('{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}', "alternate"),
       ('{"messages": [{"role": "user", "content": "a"}]}', "end with an assistant"),
       ('{"title": "no known fields"}', "no known fields")]


@pytest.mark.parametrize("line,message", BAD)
def test_each_bad_record_gives_its_error_exit_2_and_no_output(workdir, tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "好", "answer": "好的。"}\n' + line + "\n", encoding="utf-8")
    d = workdir / "data" / "tiny"
    before = {f: os.path.getmtime(d / f) for f in os.listdir(d) if f.startswith("sft_")}
    proc = run_script("prepare_sft.py", "--dataset", "tiny", "--input", str(path), cwd=workdir, check=False)
    err = user_error(proc)
    assert "bad.jsonl:2" in err and message in err
    assert {f: os.path.getmtime(d / f) for f in before} == before  # nothing written
    assert not [f for f in os.listdir(workdir / "data") if "tmp" in f]


def test_skip_bad_reports_and_continues(workdir, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(['{"question": "好", "answer": "好的。"}', BAD[0][0], BAD[3][0],
                               '{"question": "好", "answer": "好的。"}', '{"q": "a", "a": "b。"}']) + "\n", "utf-8")
    out = tmp_path / "w"
    out.mkdir()
    os.makedirs(out / "data" / "x")
    (out / "data" / "x" / "tokenizer.json").write_bytes((workdir / "data" / "tiny" / "tokenizer.json").read_bytes())
    proc = run_script("prepare_sft.py", "--dataset", "x", "--input", str(path), "--skip_bad", "--val_fraction",
                      "0.4", cwd=out)
    meta = json.loads((out / "data" / "x" / "sft_meta.json").read_text(encoding="utf-8"))
    assert meta["read"] == 5 and meta["bad_skipped"] == 2 and meta["bad_lines"] == [2, 3]
    assert meta["duplicates_dropped"] == 1
    assert meta["splits"]["train"]["examples"] + meta["splits"]["val"]["examples"] == 2
    assert "mixed.jsonl:2" in proc.stdout


def test_sft_bins_from_an_older_tokenizer_are_refused(workdir, tmp_path):
    import shutil
    shutil.copytree(workdir / "data" / "tiny", tmp_path / "data" / "tiny")
    run_script("prepare.py", "--dataset", "tiny", "--vocab_size", "400", cwd=tmp_path)  # a new tokenizer
    for task in ("pretrain", "sft"):
        proc = run_script("train.py", "--dataset=tiny", f"--task={task}", "--sft_mix=0.5", "--n_layer=1",
                          "--n_embd=32", "--n_head=2", "--block_size=64", cwd=tmp_path, check=False)
        assert "another tokenizer" in user_error(proc) and "prepare_sft.py" in user_error(proc)
    shutil.rmtree(tmp_path / "data" / "tiny")
    shutil.copytree(workdir / "data" / "tiny", tmp_path / "data" / "tiny")
    for name in os.listdir(tmp_path / "data" / "tiny"):
        if name.startswith("sft_"):
            os.remove(tmp_path / "data" / "tiny" / name)
    proc = run_script("train.py", "--dataset=tiny", "--sft_mix=0.5", cwd=tmp_path, check=False)
    assert "--sft_mix=0" in user_error(proc) and "prepare_sft.py --dataset tiny" in user_error(proc)


def test_missing_dataset_is_a_clear_error(tmp_path):
    proc = run_script("prepare_sft.py", "--dataset", "nothing", cwd=tmp_path, check=False)
    assert "python prepare.py --dataset nothing" in user_error(proc)


def test_long_conversations_drop_oldest_turns_first(tok):
    long = []
    for i in range(30):
        long += [{"role": "user", "content": f"第{i}个问题，郭靖是谁？"},
                 {"role": "assistant", "content": f"第{i}个回答，郭靖是主角。"}]
    long.append({"role": "user", "content": "最后的问题"})
    ids = render_for_reply(tok, [CONV[0]] + long, 120)
    assert len(ids) <= 120 and ids[-1] == tok.assistant_id
    text = tok.decode(ids)
    assert "你是金庸小说专家" in text and "最后的问题" in text and "第0个问题" not in text
    huge = render_for_reply(tok, [{"role": "user", "content": "龘" * 500 + "结尾"}], 60)
    assert len(huge) <= 60 and tok.decode(huge[:-2]).endswith("结尾")
    with pytest.raises(DataError):
        load_conversations("/nonexistent/file.jsonl")


def test_a_single_example_is_refused_rather_than_validated_on_itself(workdir, tmp_path):
    write_jsonl(tmp_path / "one.jsonl", [{"question": "郭靖是谁？", "answer": "郭靖是主角。"}])
    d = workdir / "data" / "tiny"
    before = {f: os.path.getmtime(d / f) for f in os.listdir(d) if f.startswith("sft_")}
    err = user_error(run_script("prepare_sft.py", "--dataset", "tiny", "--input", str(tmp_path / "one.jsonl"),
                                cwd=workdir, check=False))
    assert "one.jsonl" in err and "only 1 usable example" in err and "--val" in err
    err = user_error(run_script("prepare_sft.py", "--dataset", "tiny", "--val_fraction", "1.5", cwd=workdir,
                                check=False))
    assert "--val_fraction 1.5" in err
    assert {f: os.path.getmtime(d / f) for f in before} == before


def test_extra_wordings_join_training_only_and_never_a_validation_question(workdir, tmp_path):
    d = tmp_path / "data" / "x"
    d.mkdir(parents=True)
    (d / "tokenizer.json").write_bytes((workdir / "data" / "tiny" / "tokenizer.json").read_bytes())
    base = [{"question": f"第{i}个问题是什么？", "answer": f"第{i}个回答。"} for i in range(20)]
    write_jsonl(d / "sft.jsonl", base)

    def prepare(*args):
        proc = run_script("prepare_sft.py", "--dataset", "x", "--val_fraction", "0.25", *args, cwd=tmp_path)
        meta = json.loads((d / "sft_meta.json").read_text(encoding="utf-8"))
        val = (d / "sft_val.bin").read_bytes()
        return proc, meta, val

    _, plain, plain_val = prepare()
    assert plain["extra_sources"] == [] and plain["splits"]["train"]["examples"] == 15

    # the default file: a new wording of every answer, and every SFT question asked again with another answer
    extra = [{"question": f"请问第{i}个问题？", "answer": f"第{i}个回答。"} for i in range(20)]
    extra += [{"question": r["question"], "answer": "另一个回答。"} for r in base]
    write_jsonl(d / "sft_wordings.jsonl", extra)
    proc, meta, val = prepare()
    assert val == plain_val  # validation is the same examples, token for token
    assert meta["extra_sources"] == [os.path.join("data", "x", "sft_wordings.jsonl")]
    assert meta["extra_dropped_as_val_questions"] == 5  # the five validation questions, asked again
    # with extra files the source's training records are written twice (its own wording keeps its weight)
    assert meta["extra_examples"] == 35 and meta["source_copies"] == 2 and meta["source_examples"] == 15
    assert meta["splits"]["train"]["examples"] == 2 * 15 + 35
    assert "training-only: 35 examples" in proc.stdout
    offsets = np.fromfile(d / "sft_train.offsets.bin", dtype=np.int64)
    tokens = np.fromfile(d / "sft_train.bin", dtype=np.uint16)
    assert np.array_equal(tokens[offsets[0]:offsets[15]], tokens[offsets[15]:offsets[30]])
    assert not np.array_equal(tokens[offsets[0]:offsets[15]], tokens[offsets[30]:offsets[45]])

    _, once, once_val = prepare("--source_copies", "1")
    assert once["splits"]["train"]["examples"] == 15 + 35 and once_val == plain_val
    err = user_error(run_script("prepare_sft.py", "--dataset", "x", "--source_copies", "0", cwd=tmp_path, check=False))
    assert "--source_copies 0: expected a whole number of at least 1" in err

    _, off, off_val = prepare("--extra")  # --extra with no file turns the default off
    assert off["splits"]["train"]["examples"] == 15 and off_val == plain_val
    err = user_error(run_script("prepare_sft.py", "--dataset", "x", "--extra", str(tmp_path / "none.jsonl"),
                                cwd=tmp_path, check=False))
    assert "none.jsonl: no such file" in err
