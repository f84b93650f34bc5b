"""model.py and the engine's generation."""
import codecs
import os
import subprocess
import sys

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


def run_rows(model, x, y, w, doc=None):
    """Sum over tokens of weight * loss, and the gradients of that sum."""
    model.zero_grad()
    _, mean = model(x, y, w, doc_ids=doc)
    total = mean * w.sum()
    total.backward()
    return total.item(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("kw", [{}, {"n_kv_head": 2, "qk_norm": True}])
def test_packed_row_equals_its_examples_one_at_a_time(kw):
    """Loss and gradients of a packed row (attention kept inside each example, positions restarting) are those
    of the same examples run separately."""
    model = tiny(**kw)
    g = torch.Generator().manual_seed(3)
    lengths = [17, 9, 30, 8]  # the last is padding with weight 0
    toks = torch.randint(300, (1, sum(lengths) + 1), generator=g)
    weights = (torch.rand(1, sum(lengths) + 1, generator=g) > 0.3).float()
    weights[:, -lengths[-1]:] = 0
    doc = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])[None]
    packed, packed_grads = run_rows(model, toks[:, :-1], toks[:, 1:], weights[:, 1:], doc)
    alone, alone_grads, start = 0.0, None, 0
    for n in lengths[:-1]:
        # one example alone: its tokens, its targets inside it (the last target is the next example's first
        # token, which the packed row also predicts)
        seg = slice(start, start + n)
        loss, grads = run_rows(model, toks[:, :-1][:, seg], toks[:, 1:][:, seg], weights[:, 1:][:, seg])
        alone += loss
        alone_grads = grads if alone_grads is None else [a + b for a, b in zip(alone_grads, grads)]
        start += n
    assert packed == pytest.approx(alone, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(packed_grads, alone_grads))


def test_chunked_loss_equals_plain_cross_entropy():
    import torch.nn.functional as F
    from model import linear_cross_entropy
    g = torch.Generator().manual_seed(0)
    h = torch.randn(37, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    targets, w = torch.randint(50, (37,), generator=g), torch.rand(37, generator=g)
    ours = linear_cross_entropy(h, weight, targets, w, 8)  # 8 rows a chunk: chunks end mid-batch
    (ours * 3).backward()
    grads = h.grad.clone(), weight.grad.clone()
    h.grad, weight.grad = None, None
    ref = (F.cross_entropy(h @ weight.t(), targets, reduction="none") * w).sum()
    (ref * 3).backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(grads[0], h.grad, atol=1e-5) and torch.allclose(grads[1], weight.grad, atol=1e-5)

    def matmuls(**grad_mode):  # the matmuls one loss makes: one a chunk for the logits, two more for gradients
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            with torch.set_grad_enabled(grad_mode["enabled"]):
                loss = linear_cross_entropy(h, weight, targets, w, 8)
        return loss, sum(e.count for e in prof.key_averages() if e.key == "aten::mm")
    loss, n = matmuls(enabled=False)  # evaluation: no gradient work at all, though the weights require grad
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5) and n == 5
    assert matmuls(enabled=True)[1] == 15
    frozen = weight.detach()  # freeze_embeddings: the output layer takes no gradient, and costs no matmul for one
    h.grad = None
    loss = linear_cross_entropy(h, frozen, targets, w, 8)
    (loss * 3).backward()
    assert torch.allclose(h.grad, grads[0], atol=1e-5)
    weight = frozen
    assert matmuls(enabled=True)[1] == 10
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 matmuls, float32 softmax
        assert linear_cross_entropy(h, weight, targets, w, 8).item() == pytest.approx(ref.item(), rel=2e-2)


def test_cpu_training_takes_cache_sized_loss_chunks_and_fused_adamw():
    """Under bf16 on the CPU the loss runs in chunks of GPT.cpu_bf16_loss_chunk_rows (float32 and GPUs keep the
    larger loss_chunk_rows) and AdamW is torch's fused one: both for speed only, so one step lands where the unfused
    optimizer's does."""
    model = tiny()
    chunks, loss_fn = [], model.loss_fn
    model.loss_fn = lambda h, w, t, wt, rows: chunks.append(rows) or loss_fn(h, w, t, wt, rows)
    x = torch.randint(300, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x, x)
    _, loss = model(x, x)
    assert chunks == [GPT.cpu_bf16_loss_chunk_rows, GPT.loss_chunk_rows]
    assert GPT.cpu_bf16_loss_chunk_rows < GPT.loss_chunk_rows
    loss.backward()
    plain = tiny()
    for p, q in zip(plain.parameters(), model.parameters()):
        p.grad = q.grad.clone()
    fused = model.optimizers("adamw", 1e-2, 0.1, (0.9, 0.95), "cpu")[0]
    unfused = plain.optimizers("adamw", 1e-2, 0.1, (0.9, 0.95), "mps")[0]  # unfused off the CPU and CUDA
    assert fused.defaults["fused"] and not unfused.defaults["fused"]
    fused.step()
    unfused.step()
    start = tiny().state_dict()
    assert min((p - start[n]).abs().max() for n, p in model.named_parameters()) > 1e-3  # every parameter stepped
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(model.parameters(), plain.parameters()))


def test_compiled_model_keeps_the_chunked_loss_out_of_its_graph():
    """Compiled inside the graph, LinearCrossEntropy gave all-zero gradients on CUDA (torch 2.11, an H200; a packed
    batch even hit an illegal memory access), so the gpu profile trained nothing (bench/cuda_grad_check.py). The
    compiled model must hand the loss back to eager PyTorch; the graphs torch.compile captures hold the blocks only.
    And only the compiled one: torch.compiler.disable at import would load the compiler into every script."""
    graphs = []

    def capture(gm, example_inputs):  # a backend that records each graph and runs it as traced
        graphs.append(str(gm.graph))
        return gm.forward

    torch._dynamo.reset()
    model = tiny()
    x = torch.randint(0, model.config.vocab_size, (2, 16))
    _, eager_loss = model(x, x)
    eager_loss.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    _, loss = model.compiled(backend=capture)(x, x)
    loss.backward()
    torch._dynamo.reset()
    assert graphs and any("blocks" in g for g in graphs)  # the blocks were compiled
    assert not any("autograd_function_apply" in g or "LinearCrossEntropy" in g for g in graphs)
    assert loss.item() == pytest.approx(eager_loss.item(), rel=1e-5)
    assert all(torch.allclose(p.grad, g, atol=1e-6) for p, g in zip(model.parameters(), eager_grads))
    loaded = subprocess.run([sys.executable, "-c", "import sys, model; model.GPT(model.GPTConfig(vocab_size=64, "
                             "block_size=16, n_layer=1, n_head=1, n_embd=16)); print('torch._dynamo' in sys.modules)"],
                            capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(
                                os.path.abspath(__file__)))).stdout.strip()
    assert loaded == "False"  # building a model does not load the compiler


def test_loss_with_a_mask_skips_weightless_rows_without_changing_the_loss():
    """On the CPU, positions of weight 0 (prompts, padding) skip the output layer: the loss is still the weighted
    mean cross-entropy of all positions' logits."""
    import torch.nn.functional as F
    model = tiny()
    g = torch.Generator().manual_seed(5)
    x, y = torch.randint(300, (2, 16), generator=g), torch.randint(300, (2, 16), generator=g)
    mask = (torch.rand(2, 16, generator=g) > 0.5).float()
    hidden = {}
    model.norm.register_forward_hook(lambda mod, inp, out: hidden.update(h=out))
    _, loss = model(x, y, mask)
    logits = hidden["h"] @ model.lm_head.weight.t()
    ref = (F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
           * mask.reshape(-1)).sum() / mask.sum()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")  # on purpose: no compiler needed
def test_flex_attention_block_mask_computes_what_the_sdpa_mask_does():
    """FlexAttention (the CUDA path for packed rows) against SDPA with the boolean mask; on the CPU FlexAttention
    runs forward only, uncompiled (torch warns that it is unfused), which is enough to compare them."""
    model = tiny(n_kv_head=2).eval()
    x = torch.randint(300, (2, 40), generator=torch.Generator().manual_seed(2))
    doc = torch.tensor([[0] * 10 + [1] * 25 + [2] * 5, [0] * 40])
    with torch.no_grad():
        _, sdpa = model(x, x, doc_ids=doc)
        model.use_flex = lambda idx: True
        _, flex = model(x, x, doc_ids=doc)
    assert flex.item() == pytest.approx(sdpa.item(), rel=1e-5)


def test_flex_attention_only_inside_a_compiled_graph():
    """Uncompiled, FlexAttention materialises the whole score matrix (torch warns so on CUDA); train.py evaluates
    with the uncompiled model, which must take SDPA's masked path then, and FlexAttention only when compiled."""
    model = tiny()
    idx = type("Idx", (), {"device": torch.device("cuda")})()  # stands for a CUDA input: use_flex reads its device
    assert not model.use_flex(idx)
    decided = []
    torch._dynamo.reset()
    torch.compile(lambda: decided.append(model.use_flex(idx)), backend="eager")()
    torch._dynamo.reset()
    assert decided == [True]
    model.train()
    model.config.attn_dropout = 0.1  # no dropout on attention weights in FlexAttention: SDPA even when compiled
    decided.clear()
    torch.compile(lambda: decided.append(model.use_flex(idx)), backend="eager")()
    torch._dynamo.reset()
    assert decided == [False]


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_written_out_attention_computes_what_sdpa_does(n_kv_head):
    """The CPU's attention with dropout, at dropout 0, against SDPA with the same packed-row mask (and GQA)."""
    import torch.nn.functional as F
    from model import attention_with_dropout, document_causal_mask
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 4, 24, 8, generator=g)
    k, v = torch.randn(2, n_kv_head, 24, 8, generator=g), torch.randn(2, n_kv_head, 24, 8, generator=g)
    mask = document_causal_mask(torch.tensor([[0] * 10 + [1] * 14, [0] * 24]))
    ours = attention_with_dropout(q, k, v, mask, 0.0)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=n_kv_head != 4)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_cpu_dropout_drops_the_asked_share_and_keeps_the_mean():
    from model import dropout
    x = torch.ones(200, 1000)
    torch.manual_seed(0)
    y = dropout(x, 0.1, True)
    assert (y == 0).float().mean().item() == pytest.approx(0.1, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # kept values are scaled by 1 / (1 - p)
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.1, True), y)  # reproducible from the seed


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cpu_keep_mask_is_even_over_the_random_words_lanes(p):
    """keep_mask cuts each random int64 into four 16-bit numbers; the one holding the top bit has its own range,
    so a wrong threshold would show as a lane that keeps more or fewer than the others. An odd size ends mid-word."""
    from model import keep_mask
    torch.manual_seed(1)
    keep = keep_mask((401, 1001), p)
    assert keep.shape == (401, 1001) and keep.dtype == torch.bool
    flat = keep.view(-1)[:401 * 1000].view(-1, 4).float()
    for lane_share in flat.mean(0).tolist():
        assert lane_share == pytest.approx(1 - p, abs=0.005)
    assert not torch.equal(keep[0], keep[1])


def test_training_with_dropout_on_packed_rows_learns_on_the_cpu():
    """Dropout on the attention weights and the residual stream, on packed rows: the written-out CPU path trains
    (finite loss, gradients everywhere, the loss falls) and is random in training only."""
    model = tiny(dropout=0.2, attn_dropout=0.2)
    x = torch.randint(300, (2, 32), generator=torch.Generator().manual_seed(6))
    doc = torch.tensor([[0] * 12 + [1] * 20, [0] * 32])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        _, loss = model(x[:, :-1], x[:, 1:], doc_ids=doc[:, :-1])
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    model.eval()
    with torch.no_grad():
        a, b = (model(x[:, :-1], x[:, 1:], doc_ids=doc[:, :-1])[1].item() for _ in range(2))
    assert a == b


@pytest.mark.parametrize("dropout, attn_dropout", [(0.0, 0.5), (0.5, 0.0)])
def test_each_dropout_rate_acts_alone_and_set_dropout_changes_both(dropout, attn_dropout, monkeypatch):
    """attn_dropout alone goes through the written-out attention (random in training); dropout alone leaves the
    attention to SDPA and still makes training random. set_dropout(0, 0) makes training deterministic again."""
    import model as model_module
    calls = []
    written_out = model_module.attention_with_dropout
    monkeypatch.setattr(model_module, "attention_with_dropout", lambda *a: calls.append(a[-1]) or written_out(*a))
    model = tiny(dropout=dropout, attn_dropout=attn_dropout)
    x = torch.randint(300, (2, 16), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        a, b = (model(x[:, :-1], x[:, 1:])[1].item() for _ in range(2))
        assert a != b
        assert calls == ([attn_dropout] * 2 * model.config.n_layer if attn_dropout else [])
        model.set_dropout(0.0, 0.0)
        assert (model.config.dropout, model.config.attn_dropout) == (0.0, 0.0)
        a, b = (model(x[:, :-1], x[:, 1:])[1].item() for _ in range(2))
    assert a == b


@pytest.mark.parametrize("capability, flags, timed", [
    ("AVX512", "fpu avx512f avx512_bf16", True), ("AVX512", "fpu avx512f amx_bf16 amx_tile", True),
    ("AVX512", "fpu avx2 avx512f", False), ("AVX2", "fpu avx512f avx512_bf16", False), ("DEFAULT", "fpu amx_bf16", False)])
def test_bf16_is_timed_only_where_the_cpu_and_torchs_kernels_both_have_it(capability, flags, timed, monkeypatch):
    # ATEN_CPU_CAPABILITY=avx2 (how BENCHMARKS.md emulates a laptop) caps torch's kernels whatever /proc/cpuinfo says;
    # with bf16 units, the speedup is float32's matmul time over bf16's (a Xeon without AMX: 0.6, an EPYC: about 2)
    import io
    import model
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(model, "open", lambda *a, **k: io.StringIO(f"flags\t\t: {flags}\n"), raising=False)
    monkeypatch.setattr(model, "_matmul_seconds", lambda dtype: {torch.float32: 3.0, torch.bfloat16: 5.0}[dtype])
    assert model.cpu_bf16_speedup() == (pytest.approx(0.6) if timed else None)


def test_matmul_timing_runs_in_both_types():
    import model
    assert all(0 < model._matmul_seconds(dt, rows=64, width=32, rounds=2, reps=2) < 5
               for dt in (torch.float32, torch.bfloat16))
