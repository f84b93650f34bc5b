"""Where a run of train.py computes: its processes (DDP under torchrun), its device, and the number type it trains
in (bf16 autocast where it pays: on CUDA, and on CPUs where bf16 matmuls time clearly faster than float32)."""
import os
from contextlib import nullcontext

import torch
import torch.distributed as dist

from configurator import ConfigError
from model import CPU_BF16_MIN_SPEEDUP, cpu_bf16_speedup, pick_device


def setup_system(cfg):
    """Distributed state, device, autocast context and gradient scaler."""
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, local_rank, world = 0, 0, 1
    dev = pick_device(cfg["device"])
    if ddp and dev.startswith("mps"):  # gloo, the backend off CUDA, moves CPU and CUDA tensors only
        raise ConfigError("torchrun with device=mps: PyTorch has no distributed backend for Apple's GPU; train in "
                          "one process (python train.py ...)")
    if ddp:
        rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
        dist.init_process_group(backend="nccl" if dev.startswith("cuda") else "gloo")
        if dev.startswith("cuda"):
            dev = f"cuda:{local_rank}"
            torch.cuda.set_device(dev)
    device_type = "cuda" if dev.startswith("cuda") else dev
    if device_type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        torch.set_num_threads(cfg["threads"] or max(1, (os.cpu_count() or 1) // local_world))
    dt, bf16_speedup = cfg["dtype"], None
    if dt == "auto":
        if device_type == "cuda":
            dt = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            bf16_speedup = cpu_bf16_speedup() if device_type == "cpu" else None
            use_bf16 = torch.tensor(int((bf16_speedup or 0) > CPU_BF16_MIN_SPEEDUP))
            if ddp:  # each process timed for itself: all agree on bf16 or none uses it
                dist.all_reduce(use_bf16, op=dist.ReduceOp.MIN)
            dt = "bfloat16" if use_bf16.item() else "float32"
    if dt not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"dtype={dt!r}: expected auto, float32, bfloat16 or float16")
    ctx = nullcontext() if dt == "float32" else torch.autocast(device_type=device_type, dtype=getattr(torch, dt))
    # float16 gradients underflow without loss scaling, on any device (MPS and the CPU included)
    scaler = torch.amp.GradScaler(device_type, enabled=dt == "float16")
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dict(ddp=ddp, rank=rank, world=world, device=dev, device_type=device_type, dtype=dt, ctx=ctx,
                scaler=scaler, master=rank == 0, bf16_speedup=bf16_speedup)


def muon_speed_note(cfg, system):
    """torch.optim.Muon orthogonalises each update in bf16; a CPU without fast bf16 units emulates it, and its
    steps then cost several times AdamW's (7.7x on two AVX2 cores, BENCHMARKS.md): say so before the wait."""
    if cfg["optimizer"] != "muon" or system["device_type"] != "cpu":
        return None
    speedup = system["bf16_speedup"] if cfg["dtype"] == "auto" else cpu_bf16_speedup()
    if (speedup or 0) >= 1:
        return None
    return ("note: optimizer=muon orthogonalises each update in bfloat16, which this CPU runs slower than float32: "
            "expect steps several times slower than with AdamW (the CPU default), see BENCHMARKS.md")
