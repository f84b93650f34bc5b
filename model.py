"""The GPT: a decoder-only transformer in the style small models train best with.

Rotary position embeddings, RMSNorm before each block, no biases, a SwiGLU MLP, optional grouped-query attention
and QK-norm, attention through F.scaled_dot_product_attention (flash kernels on CUDA). The layout is the one of a
Llama/Qwen decoder (q/k/v/o projections, gate/up/down MLP, rotate-half RoPE), so that an exporter can map it to a
Hugging Face model weight for weight.
"""
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 8192
    block_size: int = 512      # longest context the model is trained on
    n_layer: int = 6
    n_head: int = 8
    n_kv_head: int = 0         # 0 means n_head; fewer gives grouped-query attention (must divide n_head)
    n_embd: int = 512
    mlp_hidden: int = 0        # 0 means about 8/3 * n_embd rounded up to 64 (SwiGLU's usual size)
    dropout: float = 0.0
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
    """x: (B, T, heads, head_dim); cos, sin: (T, head_dim)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


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
        self.dropout = c.dropout

    def forward(self, x, cos, sin, cache=None, layer=0, mask=None):
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_head, self.head_dim))
        k = self.k_norm(self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim))
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, head_dim)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        if self.n_kv_head != self.n_head:  # grouped-query attention: share each k/v head among a group of q heads
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
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
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, cos, sin, cache=None, layer=0, mask=None):
        x = x + self.drop(self.attn(self.input_norm(x), cos, sin, cache, layer, mask))
        return x + self.drop(self.mlp(self.post_attn_norm(x)))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = nn.RMSNorm(c.n_embd, eps=1e-6)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(c.n_embd // c.n_head, c.block_size, c.rope_theta, "cpu")
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # residual outputs scaled down so the stream does not grow with depth
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def set_dropout(self, p):
        """Change dropout after loading (SFT often wants another rate than pretraining)."""
        self.config.dropout = p
        for mod in self.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = p
            elif isinstance(mod, Attention):
                mod.dropout = p

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # a tied lm_head is counted once

    def forward(self, idx, targets=None, loss_mask=None, cache=None):
        """Logits and the mean cross-entropy over the positions loss_mask allows (all if None). Without targets
        only the last position's logits are computed (what generation needs). With a cache, idx continues it."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than block_size={self.config.block_size}")
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
        mask = None
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
        logits = self.lm_head(x).float()
        losses = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
        if loss_mask is None:
            return logits, losses.mean()
        m = loss_mask.reshape(-1).to(losses.dtype)
        return logits, (losses * m).sum() / m.sum().clamp(min=1.0)

    def flops_per_token(self, seq_len):
        """Training FLOPs per token: 6 per weight plus attention's 12 * layers * width * context (PaLM's count)."""
        n = self.num_params() - (0 if self.config.tie_embeddings else self.embed.weight.numel())
        return 6 * n + 12 * self.config.n_layer * self.config.n_embd * seq_len

    def optimizers(self, optimizer, learning_rate, weight_decay, betas, device_type, muon_lr=0.02):
        """AdamW for everything, or torch.optim.Muon for the 2-D matrices inside the blocks plus AdamW for the
        embedding, the norms and a separate lm_head. Decay only on matrices, never on norms."""
        matrices = [p for n, p in self.named_parameters() if p.dim() == 2 and n.startswith("blocks.")]
        others = [p for n, p in self.named_parameters() if not (p.dim() == 2 and n.startswith("blocks."))]
        fused = {"fused": True} if device_type == "cuda" else {}
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
