"""prepare.py, the tokenizer and corpus reading."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, corpus_text, run_script, user_error
from data_utils import DataError, read_text_file
from data_utils import split_document
from tokenizer import Tokenizer, TokenizerError

MIXED = "郭靖说：“𠀀龘𪚥，ＡＢＣ１２３！”Hello, world 42. 😀🐉 黄蓉笑道……「好」\n第二行\t制表符"


def test_the_data_scripts_do_not_import_torch():
    """Importing torch takes seconds on a laptop: prepare.py and prepare_sft.py need none of it (batches.py has
    what training needs), and so start at once."""
    code = "import sys, prepare, prepare_sft; print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(corpus_text().split("\n") + ["Hello world, 123 tokens."] * 20, 700)


def test_round_trip_of_every_kind_of_text(tok):
    for text in [MIXED, "", " ", "\n\n", "a" * 1000, "龘" * 7, "<|end|><|user|> typed by a user"]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert all(0 <= i < tok.vocab_size for i in ids)


def test_special_token_text_typed_by_a_user_is_not_a_special_token(tok):
    ids = tok.encode("<|end|>")
    assert tok.end_id not in ids and len(ids) > 1


def test_trained_bpe_compresses_chinese_and_survives_json(tok, tmp_path):
    text = corpus_text(1)
    assert len(text) / len(tok.encode(text)) > 1.0  # merges learned whole characters and words
    path = tmp_path / "tok.json"
    tok.save(path)
    again = Tokenizer.load(path)
    assert again.encode(MIXED) == tok.encode(MIXED)
    assert again.special == tok.special


def test_per_character_tokenizer_never_joins_two_chinese_characters(tmp_path):
    """--tokenizer chars: merges build characters from bytes (and English words), never a token of two Chinese
    characters; everything still round-trips, and the pattern travels in tokenizer.json."""
    tok = Tokenizer.train(corpus_text().split("\n") + ["Hello world, 123 tokens."] * 20, 700, per_character=True)
    text = corpus_text(1)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    pieces = [tok.decode([i]) for i in ids]
    assert not any(sum("\u4e00" <= c <= "\u9fff" for c in p) > 1 for p in pieces)
    assert sum(len(p) == 1 and "\u4e00" <= p <= "\u9fff" for p in pieces) > 0.5 * len(pieces)  # whole characters
    assert len(tok.encode("Hello world")) == 2  # other scripts still merge into words
    for sample in (MIXED, "龘" * 7):
        assert tok.decode(tok.encode(sample)) == sample
    tok.save(tmp_path / "tok.json")
    again = Tokenizer.load(tmp_path / "tok.json")
    assert again.encode(text) == ids and again.name.startswith("chars")


def test_vocab_size_limits():
    with pytest.raises(TokenizerError, match="uint16"):
        Tokenizer.train(["abc"], 70000)
    with pytest.raises(TokenizerError):
        Tokenizer.train(["abc"], 100)


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "utf-16", "utf-8-sig", "utf-8"])
def test_encodings_are_detected(tmp_path, encoding):
    text = "第一回　风雪惊变\r\n\r\n\r\n\r\n　　钱塘江浩浩江水，日日夜夜无穷无休的从临安牛家村边绕过。\r\n"
    path = tmp_path / f"{encoding}.txt"
    path.write_bytes(text.encode(encoding))
    got, enc = read_text_file(str(path))
    assert got == "第一回　风雪惊变\n\n钱塘江浩浩江水，日日夜夜无穷无休的从临安牛家村边绕过。\n"
    assert enc == {"gbk": "gb18030", "utf-16": "utf-16"}.get(encoding, encoding)


@pytest.mark.parametrize("content,message", [(b"", "empty"), (b"  \n\n ", "empty"),
                                             (b"\x00\x01\x02binary\x00" * 50, "binary"),
                                             (bytes(range(128, 256)) * 40, "replacement")])
def test_bad_corpus_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_text_file(str(path))


def test_split_is_deterministic_and_keeps_the_tail_apart():
    text = "".join(f"第{i}段。" * 20 + "\n\n" for i in range(40))
    head, tail = split_document(text, 0.1)
    assert head + tail == text
    assert split_document(text, 0.1) == (head, tail)
    assert 0.05 < len(tail) / len(text) < 0.15
    assert tail.startswith("第") and head.endswith("\n\n")  # cut between paragraphs


def test_prepare_writes_bins_meta_and_tokenizer(workdir):
    d = workdir / "data" / "tiny"
    meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    assert meta["vocab_size"] <= 600 and meta["tokenizer"]["special_tokens"]["<|end|>"] < meta["vocab_size"]
    assert {s["path"].rsplit("/", 1)[-1] for s in meta["sources"]} == {"a.txt", "b.txt"}
    assert all(s["encoding"] == "utf-8" for s in meta["sources"])
    tok = Tokenizer.load(d / "tokenizer.json")
    for split in ("train", "val"):
        ids = np.fromfile(d / f"{split}.bin", dtype=np.uint16)
        assert len(ids) == meta["splits"][split]["tokens"]
        assert ids[0] == tok.eot_id
        text = tok.decode([int(i) for i in ids if i != tok.eot_id])
        assert len(text) == meta["splits"][split]["chars"]


def test_prepare_errors_leave_previous_output_alone(workdir, tmp_path):
    d = workdir / "data" / "tiny"
    before = {f: (d / f).read_bytes() for f in ("train.bin", "meta.json")}
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\x00\x00binary\x00")
    proc = run_script("prepare.py", "--dataset", "tiny", "--input", str(bad), cwd=workdir, check=False)
    assert "bad.txt" in user_error(proc) and "binary" in user_error(proc)
    assert {f: (d / f).read_bytes() for f in before} == before
    assert not [f for f in os.listdir(workdir / "data") if "tmp" in f]


def test_prepare_reuses_a_tokenizer_and_reports_missing_gpt2(workdir, tmp_path):
    (tmp_path / "c.txt").write_text(corpus_text(2), encoding="utf-8")
    run_script("prepare.py", "--dataset", "other", "--input", str(tmp_path / "c.txt"), "--tokenizer",
               str(workdir / "data" / "tiny" / "tokenizer.json"), cwd=tmp_path)
    a = json.loads((tmp_path / "data" / "other" / "tokenizer.json").read_text(encoding="utf-8"))
    b = json.loads((workdir / "data" / "tiny" / "tokenizer.json").read_text(encoding="utf-8"))
    assert a == b
    proc = run_script("prepare.py", "--dataset", "g", "--input", str(tmp_path / "c.txt"), "--tokenizer", "gpt2",
                      cwd=tmp_path, check=False, env={"TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache")})
    if proc.returncode != 0:  # no network here: a clear one-line error that says how to get the vocabulary
        assert "GPT-2 vocabulary" in user_error(proc)


def test_train_bin_is_checked_against_the_tokenizer_and_the_token_counts(workdir, tmp_path):
    from data_utils import check_pretrain_data, file_sha256
    d = tmp_path / "tiny"
    shutil.copytree(workdir / "data" / "tiny", d)
    meta = check_pretrain_data(str(d))
    assert meta["tokenizer_sha256"] == file_sha256(d / "tokenizer.json")

    def refused(change, message):
        shutil.rmtree(d)
        shutil.copytree(workdir / "data" / "tiny", d)
        change()
        with pytest.raises(DataError, match=message) as e:
            check_pretrain_data(str(d))
        assert "run python prepare.py --dataset tiny again" in str(e.value)

    other = Tokenizer.train(corpus_text(1).split("\n"), 300)
    refused(lambda: other.save(d / "tokenizer.json"), "not the tokenizer")
    refused(lambda: open(d / "train.bin", "r+b").truncate(100), "train.bin: 100 bytes")
    refused(lambda: os.remove(d / "val.bin"), "val.bin: missing")
    refused(lambda: os.remove(d / "meta.json"), "meta.json: not found")
    meta.pop("tokenizer_sha256")
    refused(lambda: (d / "meta.json").write_text(json.dumps(meta), encoding="utf-8"), "no tokenizer_sha256")


def test_an_interrupted_prepare_is_detected(workdir, tmp_path, monkeypatch):
    """A crash while prepare.py swaps its files in leaves no meta.json, so the mix of old and new is refused."""
    import sys
    from data_utils import check_pretrain_data
    import prepare
    shutil.copytree(workdir / "data" / "tiny", tmp_path / "data" / "tiny")
    (tmp_path / "c.txt").write_text(corpus_text(3), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["prepare.py", "--dataset", "tiny", "--input", "c.txt", "--vocab_size", "400"])
    real_replace, swapped, final = os.replace, [], str(tmp_path / "data" / "tiny")

    def crash_after_the_first_file(src, dst):
        if os.path.dirname(os.path.abspath(dst)) == final:  # a file swapped into data/tiny
            if swapped:
                raise OSError(5, "simulated crash")
            swapped.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_after_the_first_file)
    with pytest.raises(OSError):
        prepare.main()
    monkeypatch.setattr(os, "replace", real_replace)
    assert [os.path.basename(p) for p in swapped] == ["tokenizer.json"]  # a new tokenizer beside the old bins
    with pytest.raises(DataError, match="meta.json: not found"):
        check_pretrain_data("data/tiny")


def test_validation_text_of_its_own_leaves_every_document_whole_for_training(tmp_path):
    corpus, held_out = tmp_path / "data" / "v" / "corpus", tmp_path / "data" / "v" / "val"
    corpus.mkdir(parents=True)
    held_out.mkdir()
    (corpus / "a.txt").write_text(corpus_text(), encoding="utf-8")
    (held_out / "retold.txt").write_text("【郭靖】\n郭靖的师父是江南七怪，后来洪七公教他降龙十八掌。\n" * 20, encoding="utf-8")
    run_script("prepare.py", "--dataset", "v", "--vocab_size", "600", cwd=tmp_path)  # data/v/val/ found by itself
    meta = json.loads((tmp_path / "data" / "v" / "meta.json").read_text(encoding="utf-8"))
    assert meta["splits"]["train"]["chars"] == len(corpus_text().strip()) + 1  # all of the corpus is trained on
    assert meta["splits"]["val"]["chars"] == len(("【郭靖】\n郭靖的师父是江南七怪，后来洪七公教他降龙十八掌。\n" * 20).strip()) + 1
    run_script("prepare.py", "--dataset", "v", "--vocab_size", "600", "--val_input", "tail", cwd=tmp_path)
    meta = json.loads((tmp_path / "data" / "v" / "meta.json").read_text(encoding="utf-8"))
    assert meta["splits"]["train"]["chars"] < len(corpus_text())  # the tail is held out again


def test_a_datasets_retellings_are_trained_on_by_default(tmp_path):
    root = tmp_path / "data" / "r"
    for d in ("corpus", "rewrites", "val"):
        (root / d).mkdir(parents=True)
    (root / "corpus" / "a.txt").write_text(corpus_text(), encoding="utf-8")
    retold = "【郭靖】\n江南七怪是郭靖最早的师父，降龙十八掌则是洪七公后来教给他的。\n" * 10
    (root / "rewrites" / "a_rw1.txt").write_text(retold, encoding="utf-8")
    (root / "val" / "v.txt").write_text("【黄蓉】\n黄蓉的父亲是桃花岛主黄药师。\n" * 10, encoding="utf-8")
    run_script("prepare.py", "--dataset", "r", "--vocab_size", "600", cwd=tmp_path)  # rewrites/ found by itself
    meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
    assert meta["splits"]["train"]["chars"] == len(corpus_text().strip()) + 1 + len(retold.strip()) + 1
    run_script("prepare.py", "--dataset", "r", "--vocab_size", "600", "--input", "data/r/corpus", cwd=tmp_path)
    meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
    assert meta["splits"]["train"]["chars"] == len(corpus_text().strip()) + 1  # --input names exactly what is read
