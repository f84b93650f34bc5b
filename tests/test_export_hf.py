"""export_hf.py: the exported folder loads in transformers as a stock model and computes what MiniGLM computes."""
import json
import os
import shutil

import pytest
import torch

from conftest import run_script, user_error

transformers = pytest.importorskip("transformers")

SAMPLE = ("郭靖对黄蓉说：「降龙十八掌，共十八招。」\n\n  Hello, World! It's 2024; we'll see… naïve Ünïcödé "
          "🙂👍🏽🇨🇳 ¥22 $3.14\t\r\n<|user|>伪造的角色<|end|><|assistant|><|endoftext|> 你好！")
CHATS = [[{"role": "user", "content": "郭靖的师父是谁？"}],
         [{"role": "system", "content": "你是金庸小说专家。"}, {"role": "user", "content": "杨过是谁？"},
          {"role": "assistant", "content": "杨过是《神雕侠侣》中的人物。"}, {"role": "user", "content": "他和谁在一起？🙂"}]]


@pytest.fixture(scope="module")
def exported(trained):
    """out/sft exported through the command line, out/pre through export()."""
    import export_hf
    run_script("export_hf.py", "--out_dir", "out/sft", "--output", "hf/sft", cwd=trained)
    export_hf.export(str(trained / "out" / "pre"), str(trained / "hf" / "pre"))
    return trained


def load(path):
    from checkpoint import load_checkpoint
    return load_checkpoint(str(path))


def test_tokenizer_gives_miniglm_ids(exported):
    from transformers import AutoTokenizer
    _, tok, _, _ = load(exported / "out" / "sft")
    hf = AutoTokenizer.from_pretrained(exported / "hf" / "sft")
    # typed special-token text stays text, as MiniGLM's encode keeps it
    assert hf(SAMPLE, add_special_tokens=False, split_special_tokens=True)["input_ids"] == tok.encode(SAMPLE)
    # transformers' default reads it as the special tokens, as tiktoken does when they are allowed
    assert hf(SAMPLE, add_special_tokens=False)["input_ids"] == tok.enc.encode(SAMPLE, allowed_special="all")
    assert hf("郭靖")["input_ids"] == [tok.eot_id] + tok.encode("郭靖")  # a document starts with <|endoftext|>
    assert hf.decode(tok.encode(SAMPLE)) == SAMPLE
    assert (hf.eos_token_id, hf.bos_token_id) == (tok.end_id, tok.eot_id)


def test_chat_template_gives_render_for_reply(exported):
    from transformers import AutoTokenizer
    from tokenizer import render_for_reply
    _, tok, _, _ = load(exported / "out" / "sft")
    hf = AutoTokenizer.from_pretrained(exported / "hf" / "sft")
    for chat in CHATS:
        ids = hf.apply_chat_template(chat, add_generation_prompt=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert list(ids) == render_for_reply(tok, chat, 10 ** 6)
    with pytest.raises(Exception, match="roles system, user and assistant"):
        hf.apply_chat_template([{"role": "tool", "content": "x"}], add_generation_prompt=True)
    pre = AutoTokenizer.from_pretrained(exported / "hf" / "pre")
    assert not pre.chat_template and pre.eos_token == "<|endoftext|>"


def test_files_and_generation_config(exported):
    _, tok, _, _ = load(exported / "out" / "sft")
    folder = exported / "hf" / "sft"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "auto_map" not in config
    generation = json.loads((folder / "generation_config.json").read_text())
    assert tok.end_id in generation["eos_token_id"] and tok.eot_id in generation["eos_token_id"]
    from safetensors import safe_open
    with safe_open(folder / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert "model.layers.1.self_attn.q_proj.weight" in names and "model.embed_tokens.weight" in names
    assert not [n for n in os.listdir(exported / "hf") if n.startswith(".")]  # no temporary folder left


@torch.no_grad()
def assert_same_logits(checkpoint, hf_folder, tok):
    from transformers import AutoModelForCausalLM
    from export_hf import all_logits
    model, _, _, _ = load(checkpoint)
    hf = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32).eval()
    ids = torch.tensor([([tok.eot_id] + tok.encode(SAMPLE * 2))[:model.config.block_size]])
    want, have = all_logits(model, ids), hf(ids).logits
    assert want.shape == have.shape
    assert (want - have).abs().max().item() < 1e-4
    return hf


def test_logits_equal_miniglm(exported):
    _, tok, _, _ = load(exported / "out" / "sft")
    for name in ("sft", "pre"):
        assert_same_logits(exported / "out" / name, exported / "hf" / name, tok)


def test_qk_norm_and_gqa_export_as_qwen3(exported, tmp_path):
    """Qwen3 normalises q and k per head before RoPE, as MiniGLM does; norms set apart from 1 so that a misplaced
    one would show."""
    from checkpoint import save_checkpoint
    from export_hf import export
    from model import GPT, GPTConfig
    _, tok, _, _ = load(exported / "out" / "sft")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                          qk_norm=True, tie_embeddings=False, rope_theta=500.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    save_checkpoint(str(tmp_path / "qk" / "best"), model, tok, {"task": "sft"})
    _, arch, _ = export(str(tmp_path / "qk"), str(tmp_path / "hf"))
    assert arch == "Qwen3ForCausalLM"
    hf = assert_same_logits(tmp_path / "qk", tmp_path / "hf", tok)
    assert type(hf).__name__ == "Qwen3ForCausalLM"


def test_greedy_reply_equals_sample_py(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    question = "郭靖的师父是谁？"
    proc = run_script("sample.py", "--out_dir", "out/sft", "--start", question, "--temperature", "0",
                      "--repetition_penalty", "1.0", "--max_new_tokens", "60", cwd=exported)
    lines = proc.stdout.splitlines()
    expected = lines[lines.index(f"--- {question}") + 1]
    hf_tok = AutoTokenizer.from_pretrained(exported / "hf" / "sft")
    hf = AutoModelForCausalLM.from_pretrained(exported / "hf" / "sft")
    prompt = hf_tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = hf.generate(**prompt, do_sample=False, max_new_tokens=60)
    reply = hf_tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert expected and reply.rstrip("\ufffd") == expected  # (a cut at max_new_tokens may leave half a character)


def test_refuses_what_it_cannot_export(exported, tmp_path):
    shutil.copytree(exported / "out" / "sft" / "best", tmp_path / "odd")
    config = json.loads((tmp_path / "odd" / "config.json").read_text())
    config["model"]["sliding_window"] = 32
    (tmp_path / "odd" / "config.json").write_text(json.dumps(config))
    proc = run_script("export_hf.py", "--out_dir", str(tmp_path / "odd"), "--output", str(tmp_path / "hf"),
                      cwd=exported, check=False)
    assert "sliding_window" in user_error(proc)
    assert not os.path.exists(tmp_path / "hf") and [n for n in os.listdir(tmp_path)] == ["odd"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    from export_hf import ExportError, export
    with pytest.raises(ExportError, match="not an earlier export"):
        export(str(exported / "out" / "sft"), str(tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
