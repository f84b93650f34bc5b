"""model.py and the engine's generation."""
import codecs

import pytest
import torch

from engine import Engine, SamplingParams, sample_next, utf8_pieces
from model import GPT, GPTConfig
from tokenizer import Tokenizer


def tiny(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"vocab_size": 300, "block_size": 64, "n_layer": 2, "n_head": 4, "n_embd": 32, **kw}))


def test_tiny_model_overfits_a_tiny_batch():
    model = tiny()
    opt = model.optimizers("adamw", 3e-3, 0.0, (0.9, 0.95), "cpu")[0]
    x = torch.randint(300, (4, 32), generator=torch.Generator().manual_seed(1))
    y = torch.roll(x, -1, dims=1)
    first = None
    for _ in range(150):
        _, loss = model(x, y)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert first > 5.0 and loss.item() < 0.1


def test_muon_option_trains_too():
    model = tiny()
    opts = model.optimizers("muon", 3e-3, 0.0, (0.9, 0.95), "cpu")
    assert len(opts) == 2 and isinstance(opts[1], torch.optim.Muon)
    x = torch.randint(300, (4, 32), generator=torch.Generator().manual_seed(1))
    _, before = model(x, x)
    for _ in range(30):
        _, loss = model(x, x)
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad()
    assert loss.item() < before.item() - 1.0


def test_masked_positions_contribute_nothing_to_loss_or_gradients():
    model = tiny()
    x = torch.randint(300, (2, 16))
    y = torch.randint(300, (2, 16))
    mask = torch.zeros(2, 16, dtype=torch.long)
    mask[:, 8:] = 1
    _, loss = model(x, y, mask)
    y2 = y.clone()
    y2[:, :8] = torch.randint(300, (2, 8))  # change only masked targets
    _, loss2 = model(x, y2, mask)
    assert torch.allclose(loss, loss2)
    loss.backward()
    g1 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss2.backward()
    assert all(torch.allclose(a, b) for a, b in zip(g1, (p.grad for p in model.parameters())))
    model.zero_grad()
    _, zero = model(x, y, torch.zeros_like(mask))
    assert zero.item() == 0.0


@pytest.mark.parametrize("kw", [{}, {"n_kv_head": 2, "qk_norm": True}, {"n_kv_head": 1, "tie_embeddings": False}])
def test_kv_cache_generation_equals_full_recomputation(kw, workdir):
    tok = Tokenizer.load(workdir / "data" / "tiny" / "tokenizer.json")
    model = tiny(vocab_size=tok.vocab_size, **kw).eval()
    engine = Engine(model, tok, {"task": "pretrain"})
    params = SamplingParams(max_new_tokens=90, temperature=0.0, repetition_penalty=1.0)  # past the 64 context
    prompt = tok.encode("郭靖是")
    with_cache = engine.generate([prompt], params, use_cache=True)[0]
    without = engine.generate([prompt], params, use_cache=False)[0]
    assert with_cache[:60] == without[:60]  # identical while the whole text fits the context
    assert len(with_cache) == 90  # and generation continues past the context by sliding the window


def test_batched_left_padded_generation_equals_one_by_one(workdir):
    tok = Tokenizer.load(workdir / "data" / "tiny" / "tokenizer.json")
    engine = Engine(tiny(vocab_size=tok.vocab_size).eval(), tok, {"task": "pretrain"})
    params = SamplingParams(max_new_tokens=20, temperature=0.0)
    prompts = [tok.encode("郭靖"), tok.encode("段誉会六脉神剑，他的父亲是"), tok.encode("杨")]
    together = engine.generate(prompts, params)
    alone = [engine.generate([p], params)[0] for p in prompts]
    assert together == alone


def test_sampling_knobs():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    none = torch.zeros((1, 0), dtype=torch.long)
    assert sample_next(logits, none, SamplingParams(temperature=0), g).item() == 1
    assert all(sample_next(logits, none, SamplingParams(temperature=1.0, top_k=1), g).item() == 1 for _ in range(20))
    picks = {sample_next(logits, none, SamplingParams(temperature=1.0, top_k=0, top_p=0.5), g).item()
             for _ in range(50)}
    assert picks == {1}
    seen = torch.tensor([[1]])
    assert sample_next(logits, seen, SamplingParams(temperature=0, repetition_penalty=2.0), g).item() == 2


def test_streaming_never_emits_half_a_character(workdir):
    tok = Tokenizer.load(workdir / "data" / "tiny" / "tokenizer.json")
    text = "郭靖说：𠀀龘𪚥😀！黄蓉笑了。"
    ids = tok.encode(text)
    assert len(ids) > len(text)  # rare characters are split into byte tokens
    pieces = list(utf8_pieces(tok, ids))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_trained_chat_model_streams_chinese_without_replacement_characters(trained):
    engine = Engine.from_checkpoint(str(trained / "out" / "sft"))
    assert engine.is_chat
    for seed in range(3):
        pieces = list(engine.stream("郭靖是谁？", SamplingParams(max_new_tokens=40, seed=seed)))
        assert pieces and all("\ufffd" not in p for p in pieces)


def test_sampling_keeps_replies_valid_utf8_even_for_an_untrained_model(workdir):
    tok = Tokenizer.load(workdir / "data" / "tiny" / "tokenizer.json")
    engine = Engine(tiny(vocab_size=tok.vocab_size).eval(), tok, {"task": "sft"})
    hot = SamplingParams(max_new_tokens=60, temperature=2.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    for seed in range(5):
        hot.seed = seed
        ids = engine.generate([[tok.eot_id]], hot)[0]
        # strict: raises on any invalid byte; only an unfinished last character (cut by max_new_tokens) may remain
        codecs.getincrementaldecoder("utf-8")("strict").decode(tok.decode_bytes(ids), final=False)
    after, allowed = engine.utf8_after, engine.utf8_allowed
    lead = tok.encode("\U0010ffff")[0]  # a lone F4 lead byte: the next byte must be 80..8F
    assert tok.decode_bytes([lead]) == b"\xf4"
    state = int(after[0, lead])
    assert tok.decode_bytes([0x85]) == b"\x85" and tok.decode_bytes([0xBF]) == b"\xbf"  # byte tokens: id = byte
    assert allowed[state, 0x85] and not allowed[state, 0xBF]
    assert not allowed[state, tok.end_id] and allowed[0, tok.end_id]
