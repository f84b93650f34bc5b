"""The GPT: a decoder-only transformer in the style small models train best with.

Rotary position embeddings, RMSNorm before each block, no biases, a SwiGLU MLP, optional grouped-query attention
and QK-norm, attention through F.scaled_dot_product_attention (flash kernels on CUDA). The layout is the one of a
Llama/Qwen decoder (q/k/v/o projections, gate/up/down MLP, rotate-half RoPE), so that an exporter can map it to a
Hugging Face model weight for weight.

Packed batches: several short documents (SFT examples) can share one row. doc_ids (B, T) says which document each
token belongs to; attention then stays inside each document (causal within it) and rotary positions restart at
each document's first token, so a packed row computes exactly what its documents would compute one at a time.
FlexAttention's block mask does this on CUDA (it skips the masked blocks); elsewhere SDPA with a boolean mask.
The loss never builds a float32 copy of all logits: it runs the output layer and cross-entropy chunk by chunk
(on the CPU only over the positions the loss weighs).
On the CPU, dropout draws its masks four to a random int64 (keep_mask; aten's bernoulli_ is five times as slow
there), and attention with dropout on its weights is written out in float32, as SDPA's unfused path computes it.
"""
import math
import sys
import time
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from errors import UserError


class DeviceError(UserError):
    """A --device this machine does not have."""


@dataclass
class GPTConfig:
    vocab_size: int = 8192
    block_size: int = 512      # longest context the model is trained on
    n_layer: int = 6
    n_head: int = 8
    n_kv_head: int = 0         # 0 means n_head; fewer gives grouped-query attention (must divide n_head)
    n_embd: int = 512
    mlp_hidden: int = 0        # 0 means about 8/3 * n_embd rounded up to 64 (SwiGLU's usual size)
    dropout: float = 0.0       # on the embeddings and on each attention and MLP output (training only)
    attn_dropout: float = 0.0  # on the attention weights; costs SDPA's fused kernels (and FlexAttention on CUDA)
    qk_norm: bool = False
    rope_theta: float = 10000.0
    tie_embeddings: bool = True

    def __post_init__(self):
        self.n_kv_head = self.n_kv_head or self.n_head
        self.mlp_hidden = self.mlp_hidden or 64 * math.ceil(8 * self.n_embd / 3 / 64)
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(f"n_embd={self.n_embd} must split into n_head={self.n_head} heads of even size")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head}")

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self):
        return asdict(self)


def rope_tables(head_dim, length, theta, device):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # rotate-half layout, as Llama
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """x: (B, T, heads, head_dim); cos, sin: (B or 1, T, 1, head_dim)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def positions_in_documents(doc_ids):
    """(B, T) position of each token inside its document: 0 at every token whose document differs from the
    previous token's."""
    B, T = doc_ids.shape
    index = torch.arange(T, device=doc_ids.device).expand(B, T)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    return index - torch.where(starts, index, 0).cummax(dim=1).values


def document_causal_mask(doc_ids):
    """(B, 1, T, T) boolean SDPA mask: query i sees key j <= i of its own document."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    return (causal & (doc_ids[:, :, None] == doc_ids[:, None, :]))[:, None]


def flex_block_mask(doc_ids):
    """FlexAttention's block mask for the same pattern; fully masked 128x128 blocks are never computed."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q, k):
        return (k <= q) & (doc_ids[b, q] == doc_ids[b, k])
    B, T = doc_ids.shape
    return create_block_mask(mask_mod, B, None, T, T, device=doc_ids.device)


class LinearCrossEntropy(torch.autograd.Function):
    """sum_i w_i * cross_entropy(h_i @ W^T, t_i), computed over chunks of rows so that at most one chunk's logits
    exist at a time (in float32 for the softmax). The gradients are computed in the same pass and scaled by the
    incoming gradient in backward, the way fused 'linear cross-entropy' kernels do it."""

    @staticmethod
    def forward(ctx, h, weight, targets, weights, chunk_rows, grad_enabled):
        # forward always runs with grad mode off, and needs_input_grad is True for a weight that requires grad
        # even under torch.no_grad(): the caller's grad mode says whether any gradient will be asked for
        needs_grad_h, needs_grad_w = (grad_enabled and ctx.needs_input_grad[i] for i in (0, 1))
        needs_grad = needs_grad_h or needs_grad_w
        dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else h.dtype
        w = weight.to(dtype)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if needs_grad_h else None
        # a frozen output layer (freeze_embeddings) skips the third of the matmuls that only its gradient needs
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if needs_grad_w else None
        for s in range(0, h.shape[0], chunk_rows):
            hc, tc, wc = h[s:s + chunk_rows].to(dtype), targets[s:s + chunk_rows], weights[s:s + chunk_rows]
            logits = (hc @ w.t()).float()
            logits -= logits.max(dim=-1, keepdim=True).values  # shifted: exp cannot overflow
            target_logits = logits.gather(1, tc[:, None]).squeeze(1)
            exp_sum = logits.exp_().sum(dim=-1)  # logits now hold exp(shifted logits): one exp serves loss and grad
            total += ((exp_sum.log() - target_logits) * wc).sum()
            if needs_grad:  # d(loss)/d(logits) = w * (softmax - onehot)
                probs = logits.div_(exp_sum[:, None])
                probs[torch.arange(len(tc), device=h.device), tc] -= 1.0
                g = (probs * wc[:, None]).to(dtype)
                if needs_grad_h:
                    grad_h[s:s + chunk_rows] = g @ w
                if needs_grad_w:
                    grad_w += (g.t() @ hc).float()
        if needs_grad:
            ctx.save_for_backward(grad_h, grad_w)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_h, grad_w = ctx.saved_tensors
        return (None if grad_h is None else grad_h * grad_total.to(grad_h.dtype),
                None if grad_w is None else grad_w * grad_total, None, None, None, None)


def linear_cross_entropy(h, weight, targets, weights, chunk_rows):
    return LinearCrossEntropy.apply(h, weight, targets, weights, chunk_rows, torch.is_grad_enabled())


PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40": 181e12, "4090": 165e12, "A10": 125e12,
                   "3090": 71e12, "V100": 125e12, "T4": 65e12}  # dense bf16 tensor-core FLOP/s, from the data sheets


def pick_device(name="auto"):
    """The device to run on: a CUDA GPU, else Apple's MPS, else the CPU, unless `name` says which. A device this
    machine lacks is a DeviceError (one line), not torch's traceback at the first tensor."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device={name!r}: expected auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device={name!r}: this torch sees no CUDA GPU (a CPU-only build, or no driver); "
                          f"use --device=auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                          f"numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device={name!r}: Apple's MPS is not available here; use --device=auto or cpu")
    return name


CPU_BF16_MIN_SPEEDUP = 1.2  # dtype=auto takes bf16 on a CPU only when it is clearly faster: float32 is more exact


def cpu_bf16_speedup():
    """How many times faster bf16 matmuls run than float32 ones on this CPU; None where it has no bf16 units.
    The flags do not tell: with AVX512-BF16, bf16 autocast doubled training speed on an AMD EPYC but ran at 0.6x
    on a Xeon without AMX (BENCHMARKS.md), so a matmul of a small model's shape is timed in both types (~0.2 s)."""
    # torch's kernels may be capped below the hardware (ATEN_CPU_CAPABILITY=avx2 emulates a laptop): bf16 is then slow
    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return None
    if " avx512_bf16" not in flags and " amx_bf16" not in flags:
        return None
    return _matmul_seconds(torch.float32) / _matmul_seconds(torch.bfloat16)


def _matmul_seconds(dtype, rows=2048, width=256, rounds=3, reps=5):
    """Best of a few timings of a (rows, width) x (width, 4 width) matmul, the size of a small model's MLP."""
    x, w = torch.randn(rows, width).to(dtype), torch.randn(width, 4 * width).to(dtype)
    x @ w  # the first call sets up the kernel
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            x @ w
        best = min(best, time.perf_counter() - t0)
    return best


def gpu_peak_flops():
    """The current CUDA GPU's peak bf16 FLOP/s, for model FLOPs utilisation; None when unknown."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def keep_mask(shape, p):
    """A boolean mask of the given shape, each element True with probability 1 - p, for dropout on the CPU.
    aten's CPU bernoulli_ (what F.dropout draws with) costs about 4.5 ns a number here and torch.rand 2.4; one
    random int64 is cut into four 16-bit numbers instead (0.8 ns each). random_ leaves an int64's top bit 0, so
    the lane holding the top bits is uniform on [0, 32767] and gets its own threshold."""
    n = math.prod(shape)
    words = (n + 3) // 4
    lanes = torch.empty(words, dtype=torch.int64).random_().view(torch.int16).view(words, 4)
    thresholds = [round(p * 65536) - 32768] * 4
    thresholds[3 if sys.byteorder == "little" else 0] = round(p * 32768)
    keep = lanes >= torch.tensor(thresholds, dtype=torch.int16)
    return keep.view(-1)[:n].view(shape)


def dropout(x, p, training):
    """F.dropout, except that on the CPU the mask comes from keep_mask, about three times cheaper: the attention
    weights' dropout draws millions of numbers a step."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    return x * keep_mask(x.shape, p).to(x.dtype) * (1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    def forward(self, x):
        return dropout(x, self.p, self.training)


def attention_with_dropout(q, k, v, mask, p):
    """softmax(q k^T / sqrt(d) + mask) with dropout, @ v, in float32 as SDPA's CPU kernels compute it (in bf16 the
    weights lose ten times more precision). Written out for the CPU: SDPA runs its unfused path anyway when the
    weights have dropout, and its mask of random numbers is the slower part (see dropout)."""
    if k.shape[1] != q.shape[1]:  # grouped-query attention: each k/v head serves a group of q heads
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    with torch.autocast(q.device.type, enabled=False):
        scores = (q.float() @ k.float().transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        return (dropout(weights, p, True) @ v.float()).to(v.dtype)


class KVCache:
    """Keys and values of every layer for up to max_len positions, and which key positions are real (left padding
    of batched prompts is not). pos is how many positions are filled."""

    def __init__(self, config, batch_size, max_len, device, dtype):
        hd = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_kv_head, max_len, hd)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.key_valid = torch.ones(batch_size, max_len, dtype=torch.bool, device=device)
        self.max_len, self.pos = max_len, 0

    def update(self, layer, k, v):
        t = k.shape[2]
        self.k[layer, :, :, self.pos:self.pos + t] = k
        self.v[layer, :, :, self.pos:self.pos + t] = v
        return self.k[layer, :, :, :self.pos + t], self.v[layer, :, :, :self.pos + t]


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = c.n_head, c.n_kv_head, c.n_embd // c.n_head
        self.q_proj = nn.Linear(c.n_embd, c.n_head * self.head_dim, bias=False)
        self.k_proj = nn.Linear(c.n_embd, c.n_kv_head * self.head_dim, bias=False)
        self.v_proj = nn.Linear(c.n_embd, c.n_kv_head * self.head_dim, bias=False)
        self.o_proj = nn.Linear(c.n_head * self.head_dim, c.n_embd, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if c.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if c.qk_norm else nn.Identity()
        self.dropout = c.attn_dropout

    def forward(self, x, cos, sin, cache=None, layer=0, mask=None):
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_head, self.head_dim))
        k = self.k_norm(self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim))
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, head_dim)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        gqa = self.n_kv_head != self.n_head  # grouped-query attention: each k/v head serves a group of q heads
        if mask is not None and not isinstance(mask, torch.Tensor):  # a FlexAttention BlockMask
            from torch.nn.attention.flex_attention import flex_attention
            y = flex_attention(q, k, v, block_mask=mask, enable_gqa=gqa)
        elif self.training and self.dropout > 0 and x.device.type == "cpu":
            if mask is None:
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = attention_with_dropout(q, k, v, mask, self.dropout)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa,
                                               dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.n_embd, c.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(c.n_embd, c.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(c.mlp_hidden, c.n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_norm = nn.RMSNorm(c.n_embd, eps=1e-6)
        self.attn = Attention(c)
        self.post_attn_norm = nn.RMSNorm(c.n_embd, eps=1e-6)
        self.mlp = MLP(c)
        self.drop = Dropout(c.dropout)

    def forward(self, x, cos, sin, cache=None, layer=0, mask=None):
        x = x + self.drop(self.attn(self.input_norm(x), cos, sin, cache, layer, mask))
        return x + self.drop(self.mlp(self.post_attn_norm(x)))


class GPT(nn.Module):
    # rows of logits alive at once in the loss (2048 x 8192 float32 = 64 MB). Under bf16 on the CPU a chunk of 256
    # rows (8 MB) stays in the caches for the passes over its logits: the loss 25% faster there; float32 and GPUs do
    # as well or better with large chunks (BENCHMARKS.md, "The loss in chunks of 256 rows")
    loss_chunk_rows = 2048
    cpu_bf16_loss_chunk_rows = 256
    packed_attention = "auto"  # auto: FlexAttention for packed rows on CUDA; "sdpa": SDPA with a mask everywhere

    def __init__(self, config):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.n_embd)
        self.drop = Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = nn.RMSNorm(c.n_embd, eps=1e-6)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(c.n_embd // c.n_head, c.block_size, c.rope_theta, "cpu")
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.loss_fn = linear_cross_entropy  # compiled() swaps in a version torch.compile leaves out of its graph
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # residual outputs scaled down so the stream does not grow with depth
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def set_dropout(self, p, attn_p):
        """Change the dropout rates after loading (SFT often wants others than pretraining)."""
        self.config.dropout, self.config.attn_dropout = p, attn_p
        for mod in self.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = p
            elif isinstance(mod, Attention):
                mod.dropout = attn_p

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # a tied lm_head is counted once

    def forward(self, idx, targets=None, loss_mask=None, cache=None, doc_ids=None):
        """With targets: (None, mean cross-entropy over the positions loss_mask weighs (all if None)); the logits
        are never materialised. Without: the last position's logits (what generation needs), None. With a cache,
        idx continues it. doc_ids (B, T) packs several documents per row (see the module's docstring)."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than block_size={self.config.block_size}")
        mask = None
        if doc_ids is not None:
            pos = positions_in_documents(doc_ids)
            cos, sin = self.rope_cos[pos][:, :, None], self.rope_sin[pos][:, :, None]
            mask = flex_block_mask(doc_ids) if self.use_flex(idx) else document_causal_mask(doc_ids)
        else:
            cos, sin = self.rope_cos[None, start:start + T, None], self.rope_sin[None, start:start + T, None]
        if cache is not None and (start > 0 or not bool(cache.key_valid[:, :T].all())):
            # query i sees keys 0..start+i that are real; and always itself, so no row is all masked (NaN)
            q_pos = torch.arange(start, start + T, device=idx.device)[:, None]
            k_pos = torch.arange(start + T, device=idx.device)[None, :]
            mask = (k_pos <= q_pos) & cache.key_valid[:, None, None, :start + T]
            mask = mask | (k_pos == q_pos)
        x = self.drop(self.embed(idx))
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i, mask)
        if cache is not None:
            cache.pos += T
        x = self.norm(x)
        if targets is None:
            return self.lm_head(x[:, -1:, :]).float(), None
        weights = torch.ones(targets.shape, device=x.device) if loss_mask is None else loss_mask.float()
        h, weights, targets = x.reshape(B * T, -1), weights.reshape(-1), targets.reshape(-1)
        if loss_mask is not None and h.device.type == "cpu":
            # rows that weigh nothing (prompts, padding) skip the output layer; not on GPUs, where the index would
            # wait for the device and give every batch another shape
            keep = weights.nonzero().squeeze(1)
            h, weights, targets = h[keep], weights[keep], targets[keep]
        cpu_bf16 = h.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        chunk_rows = self.cpu_bf16_loss_chunk_rows if cpu_bf16 else self.loss_chunk_rows
        total = self.loss_fn(h, self.lm_head.weight, targets, weights, chunk_rows)
        return None, total / weights.sum().clamp(min=1.0)

    def compiled(self, **options):
        """torch.compile(self, **options) with the chunked loss left out of the graph, run eagerly. Compiled inside it
        on CUDA (torch 2.11, an H200) its gradients came out all zero and a packed batch hit an illegal memory
        access: the gpu profile trained nothing. Run eagerly, the gradients match float32 eager ones (cosine 1.0000,
        bench/cuda_grad_check.py). Here rather than at import: torch.compiler.disable loads the compiler (1.5 s)."""
        self.loss_fn = torch.compiler.disable(linear_cross_entropy)
        return torch.compile(self, **options)

    def use_flex(self, idx):
        # FlexAttention has no dropout on the attention weights: with attn_dropout on, SDPA's masked path runs instead.
        # Uncompiled (train.py's evaluation, a plain forward) it would build the full score matrix: SDPA then too
        return (self.packed_attention == "auto" and idx.device.type == "cuda" and torch.compiler.is_compiling()
                and not (self.training and self.config.attn_dropout > 0))

    def flops_per_token(self, seq_len):
        """Training FLOPs per token: 6 per weight plus attention's 12 * layers * width * context (PaLM's count)."""
        n = self.num_params() - (0 if self.config.tie_embeddings else self.embed.weight.numel())
        return 6 * n + 12 * self.config.n_layer * self.config.n_embd * seq_len

    def optimizers(self, optimizer, learning_rate, weight_decay, betas, device_type, muon_lr=0.02):
        """AdamW for everything, or torch.optim.Muon for the 2-D matrices inside the blocks plus AdamW for the
        embedding, the norms and a separate lm_head. Decay only on matrices, never on norms."""
        trained = [(n, p) for n, p in self.named_parameters() if p.requires_grad]  # not a frozen embedding
        matrices = [p for n, p in trained if p.dim() == 2 and n.startswith("blocks.")]
        others = [p for n, p in trained if not (p.dim() == 2 and n.startswith("blocks."))]
        # fused: one pass over each tensor instead of a dozen (the CPU SFT step 2-4% faster; BENCHMARKS.md)
        fused = {"fused": True} if device_type in ("cuda", "cpu") else {}
        if optimizer == "adamw":
            decay = matrices + [p for p in others if p.dim() >= 2]
            no_decay = [p for p in others if p.dim() < 2]
            groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
            return [torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **fused)]
        if optimizer == "muon":
            adamw = torch.optim.AdamW([{"params": [p for p in others if p.dim() >= 2], "weight_decay": weight_decay},
                                       {"params": [p for p in others if p.dim() < 2], "weight_decay": 0.0}],
                                      lr=learning_rate, betas=betas, **fused)
            muon = torch.optim.Muon(matrices, lr=muon_lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
            return [adamw, muon]
        raise ValueError(f"optimizer={optimizer!r}: expected 'adamw' or 'muon'")
