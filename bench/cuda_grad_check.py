"""Does a training step on this machine compute the gradients it should? One batch through the gpu profile's model
(8 x 512, vocab 8192, 32 rows of 512 tokens), its gradients in each way train.py can run it, compared with the
eager float32 ones, and then one clipped, fused AdamW step: how far it moved the weights.

    python bench/cuda_grad_check.py                          # all ways, on CUDA when there is a GPU
    python bench/cuda_grad_check.py --ways compiled compiled_loss_in_graph

Ways: eager (float32 | bfloat16 autocast), compiled (GPT.compiled, as train.py compiles: the loss run eagerly) and
compiled_loss_in_graph (plain torch.compile, the loss inside the graph too). Batches: `plain` (corpus windows:
pretraining), `packed` (four examples a row with loss on their second halves: SFT; FlexAttention when compiled on
CUDA) and `packed_sdpa` (the same through SDPA with a mask, which SFT takes when attention dropout is on). A way
is right when its gradients point where the float32 ones do (cosine near 1) with about their norm.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from model import GPT, GPTConfig, linear_cross_entropy  # noqa: E402


def make_batch(kind, B, T, vocab, device):
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, vocab, (B, T), generator=g)
    y = torch.roll(x, -1, dims=1)  # a learnable target: the next token of the same random row
    if kind == "plain":
        return {"x": x.to(device), "y": y.to(device)}
    doc = torch.arange(T)[None, :].expand(B, T) * 4 // T  # four examples a row
    pos = torch.arange(T)[None, :].expand(B, T) % (T // 4)
    w = (pos >= T // 8).float()  # loss on each example's second half, as on an answer
    return {"x": x.to(device), "y": y.to(device), "w": w.to(device), "doc": doc.contiguous().to(device)}


def grads(model, batch, dtype, device_type):
    model.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
        _, loss = model(batch["x"], batch["y"], batch.get("w"), doc_ids=batch.get("doc"))
    loss.backward()
    named = getattr(model, "_orig_mod", model).named_parameters()  # a compiled model's names, without its prefix
    return loss.item(), {n: (p.grad.detach().float().clone() if p.grad is not None else None) for n, p in named}


def compare(ref, got):
    names = [n for n in ref if ref[n] is not None]
    missing = sum(got[n] is None for n in names)
    a = torch.cat([ref[n].flatten() for n in names])
    b = torch.cat([(got[n] if got[n] is not None else torch.zeros_like(ref[n])).flatten() for n in names])
    finite = bool(torch.isfinite(b).all())
    cos = torch.nn.functional.cosine_similarity(a, b.nan_to_num(), dim=0).item()
    return dict(norm=b.norm().item() if finite else float("nan"), ref_norm=a.norm().item(), cos=cos,
                finite=finite, missing=missing)


def step_moves(model, lr=1e-3):
    """Weights moved by one clipped AdamW step (fused on CUDA, as train.py makes it) from the current gradients."""
    before = [p.detach().clone() for p in model.parameters()]
    opt = model.optimizers("adamw", lr, 0.1, (0.9, 0.95), model.embed.weight.device.type)[0]
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before))).item()
    with torch.no_grad():
        for p, b in zip(model.parameters(), before):
            p.copy_(b)
    return moved


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ways", nargs="+", default=["eager_bf16", "compiled", "compiled_loss_in_graph"],
                    choices=["eager_bf16", "compiled", "compiled_loss_in_graph"])
    ap.add_argument("--batches", nargs="+", default=["plain", "packed", "packed_sdpa"],
                    choices=["plain", "packed", "packed_sdpa"])
    ap.add_argument("--size", default="8x8x512x512x32", help="layers x heads x width x context x rows")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    L, H, C, T, B = (int(v) for v in args.size.split("x"))
    device, device_type = args.device, args.device.split(":")[0]
    print(f"torch {torch.__version__} on {device}"
          + (f" ({torch.cuda.get_device_name()})" if device_type == "cuda" else ""), flush=True)
    torch.manual_seed(1337)
    model = GPT(GPTConfig(vocab_size=8192, block_size=T, n_layer=L, n_head=H, n_embd=C)).to(device)
    model.train()  # dropout is 0 here: every way sees the same network
    print("| batch | way | loss | grad norm (float32 eager's) | cosine to float32 eager | finite | params without grad "
          "| clipped step moved the weights by | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in args.batches:
        model.packed_attention = "sdpa" if kind == "packed_sdpa" else "auto"
        batch = make_batch(kind, B, T, 8192, device)
        ref_loss, ref = grads(model, batch, torch.float32, device_type)
        moved = step_moves(model)
        print(f"| {kind} | eager_float32 | {ref_loss:.4f} | {compare(ref, ref)['ref_norm']:.4f} | 1 | True | 0 "
              f"| {moved:.4f} | – |", flush=True)
        for way in args.ways:
            torch._dynamo.reset()
            model.loss_fn = linear_cross_entropy
            if way == "compiled":
                m = model.compiled()
            else:  # the loss compiled inside the graph too: what train.py did before GPT.compiled
                m = torch.compile(model) if way == "compiled_loss_in_graph" else model
            t0 = time.perf_counter()
            try:
                for _ in range(2):  # the second call is the compiled one for sure
                    loss, got = grads(m, batch, torch.bfloat16, device_type)
            except Exception as e:  # a way that fails is a finding, not the end of the check
                print(f"| {kind} | {way} | failed: {type(e).__name__}: {str(e).splitlines()[0][:160]} |", flush=True)
                continue
            c = compare(ref, got)
            moved = step_moves(model)
            print(f"| {kind} | {way} | {loss:.4f} | {c['norm']:.4f} ({c['ref_norm']:.4f}) | {c['cos']:.4f} | "
                  f"{c['finite']} | {c['missing']} | {moved:.4f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
