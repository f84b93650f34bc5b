"""Train MiniGLM: pretraining on data/DATASET/train.bin, or SFT on the SFT bins with the answer-only loss mask.

    python train.py config/pretrain.py                  # then: python train.py config/sft.py
    python train.py config/pretrain.py --max_iters=500 --batch_size=8
    torchrun --standalone --nproc_per_node=4 train.py config/pretrain.py     # several GPUs (DDP)

Defaults below, then the config file, then --key=value (see configurator.py). Runs on CUDA (bf16 autocast,
fused AdamW, torch.compile), Apple MPS or CPU. Every eval_interval it logs to OUT_DIR/log.jsonl, redraws
OUT_DIR/loss.png and writes OUT_DIR/latest/ (and best/ when validation loss improves). Ctrl-C or SIGTERM saves
and exits; init_from='resume' continues exactly where it stopped.
"""
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from checkpoint import load_checkpoint, load_trainer_state, save_checkpoint
from configurator import ConfigError, hardware_profile, load_config
from data_utils import SFTData, get_batch_pretrain, get_batch_sft, open_tokens, read_json
from errors import run_main
from model import GPT, GPTConfig
from plotting import plot_runs
from tokenizer import Tokenizer

# ---- defaults -------------------------------------------------------------------------------------------------
task = "pretrain"            # 'pretrain' (next token on the corpus) or 'sft' (loss on the assistant's replies only)
dataset = "jinyong"          # data/DATASET/ as written by prepare.py / prepare_sft.py
out_dir = "out/pretrain"
init_from = "scratch"        # 'scratch', 'resume' (continue out_dir/latest), or a checkpoint or run folder
profile = "auto"             # read by configs/: auto, gpu, cpu, tiny
# model
n_layer, n_head, n_kv_head, n_embd = 6, 8, 0, 512   # n_kv_head=0: as many as n_head; fewer: grouped-query attention
block_size = 512
dropout = 0.0
qk_norm = False
tie_embeddings = True
# optimisation
batch_size = 16              # sequences per micro-step on each process
gradient_accumulation_steps = 1   # micro-steps per optimizer step, over all processes together
group_by_length = True       # SFT: draw each batch among examples of similar length (less padding)
prompt_loss_weight = 0.0     # SFT: weight of the loss on the rest of each example (questions), replies weigh 1
sft_mix = 0.0                # pretraining: this share of each batch's rows are packed SFT examples (loss on replies)
max_iters = 2000
max_seconds = 0.0            # wall-clock cap; training stops at it or max_iters, the LR schedule fits the first to end
optimizer = "adamw"          # 'adamw', or 'muon' (torch.optim.Muon for the block matrices, AdamW for the rest)
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 50
lr_decay_iters = 0           # 0 means max_iters
weight_decay = 0.1
beta1, beta2 = 0.9, 0.95
grad_clip = 1.0
# evaluation and logging
eval_interval = 100
eval_iters = 20
log_interval = 10
# system
device = "auto"              # auto, cpu, cuda, cuda:1, mps
dtype = "auto"               # auto: bf16 on CUDA (fp16 if unsupported) and on CPUs with bf16 units; else fp32
compile = True               # torch.compile the model (CUDA only: on CPU the warm-up costs more than it saves)
threads = 0                  # CPU threads; 0 means all cores (shared out among local processes under torchrun)
seed = 1337
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (bool, int, float, str))}

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40": 181e12, "4090": 165e12, "A10": 125e12,
                   "3090": 71e12, "V100": 125e12, "T4": 65e12}


def get_lr(cfg, it, progress):
    """Linear warmup over warmup_iters, then cosine decay to min_lr as progress goes 0 -> 1."""
    if it < cfg["warmup_iters"]:
        return cfg["learning_rate"] * (it + 1) / (cfg["warmup_iters"] + 1)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return cfg["min_lr"] + coeff * (cfg["learning_rate"] - cfg["min_lr"])


def cpu_has_native_bf16():
    """bf16 autocast doubles training speed on CPUs with bf16 units (AVX512-BF16, AMX); elsewhere it is slower."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def setup_system(cfg):
    """Distributed state, device, autocast context and gradient scaler."""
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, local_rank, world = 0, 0, 1
    dev = cfg["device"]
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
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
    dt = cfg["dtype"]
    if dt == "auto":
        if device_type == "cuda":
            dt = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dt = "bfloat16" if device_type == "cpu" and cpu_has_native_bf16() else "float32"
    if dt not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"dtype={dt!r}: expected auto, float32, bfloat16 or float16")
    ptdtype = getattr(torch, dt)
    ctx = nullcontext() if dt == "float32" else torch.autocast(device_type=device_type, dtype=ptdtype)
    scaler = torch.amp.GradScaler("cuda", enabled=(dt == "float16" and device_type == "cuda"))
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dict(ddp=ddp, rank=rank, world=world, device=dev, device_type=device_type, dtype=dt, ctx=ctx,
                scaler=scaler, master=rank == 0)


def load_data(cfg, tok):
    """Batch functions for train and val, and characters per token of the val split (for bits per character)."""
    data_dir = os.path.join("data", cfg["dataset"])
    if cfg["task"] == "pretrain":
        meta = read_json(os.path.join(data_dir, "meta.json"))
        splits = {s: open_tokens(os.path.join(data_dir, f"{s}.bin")) for s in ("train", "val")}
        cpt = {s: meta["splits"][s]["chars_per_token"] for s in ("train", "val")}
        if not 0.0 <= cfg["sft_mix"] < 1.0:
            raise ConfigError(f"sft_mix={cfg['sft_mix']}: expected a share of the batch from 0 up to (not incl.) 1")
        sft_rows = round(cfg["batch_size"] * cfg["sft_mix"])
        # Q&A seen during pretraining too (train split only: SFT's validation stays unseen) gives many more
        # passes over the questions than SFT alone has time for, and teaches the corpus's facts in Q&A form
        if sft_rows and not os.path.exists(os.path.join(data_dir, "sft_meta.json")):
            raise ConfigError(f"sft_mix={cfg['sft_mix']} mixes Q&A into pretraining, but {data_dir} has no SFT data: "
                              f"run python prepare_sft.py --dataset {cfg['dataset']} first, or pass --sft_mix=0")
        sft = SFTData(data_dir, "train") if sft_rows else None

        def batch(split, gen):  # validation stays pure corpus, so its loss and bits/char compare across runs
            rows = sft_rows if split == "train" else 0
            return get_batch_pretrain(splits[split], cfg["batch_size"], cfg["block_size"], cfg["_device"], gen,
                                      sft=sft, sft_rows=rows)
    elif cfg["task"] == "sft":
        meta = read_json(os.path.join(data_dir, "sft_meta.json"))
        splits = {s: SFTData(data_dir, s) for s in ("train", "val")}
        cpt = {s: meta["splits"][s]["reply_chars"] / max(1, meta["splits"][s]["loss_tokens"]) for s in splits}

        def batch(split, gen):
            return get_batch_sft(splits[split], cfg["batch_size"], cfg["block_size"], cfg["_device"], gen,
                                 pad_id=tok.eot_id, group_by_length=cfg["group_by_length"] and split == "train",
                                 prompt_weight=cfg["prompt_loss_weight"] if split == "train" else 0.0)
    else:
        raise ConfigError(f"task={cfg['task']!r}: expected 'pretrain' or 'sft'")
    return batch, cpt


def main():
    cfg = load_config(DEFAULTS, sys.argv[1:])
    cfg["profile"] = hardware_profile()
    sysinfo = setup_system(cfg)
    master, device_type = sysinfo["master"], sysinfo["device_type"]
    cfg["_device"] = sysinfo["device"]
    world = sysinfo["world"]
    if cfg["gradient_accumulation_steps"] % world:
        raise ConfigError(f"gradient_accumulation_steps={cfg['gradient_accumulation_steps']} must be a multiple of "
                          f"the number of processes ({world})")
    grad_accum = cfg["gradient_accumulation_steps"] // world
    torch.manual_seed(cfg["seed"] + sysinfo["rank"])
    data_dir = os.path.join("data", cfg["dataset"])
    out_dir = cfg["out_dir"]
    log = (lambda *a: tqdm.write(" ".join(str(x) for x in a))) if master else (lambda *a: None)

    # ---- model and tokenizer: from scratch, resumed, or initialised from another run (SFT from pretraining)
    trainer_state, start_info = None, {}
    if cfg["init_from"] == "scratch":
        tok = Tokenizer.load(os.path.join(data_dir, "tokenizer.json"))
        try:
            mconf = GPTConfig(vocab_size=tok.vocab_size, block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                              n_head=cfg["n_head"], n_kv_head=cfg["n_kv_head"], n_embd=cfg["n_embd"],
                              dropout=cfg["dropout"], qk_norm=cfg["qk_norm"], tie_embeddings=cfg["tie_embeddings"])
        except ValueError as e:
            raise ConfigError(str(e)) from None
        model = GPT(mconf)
    else:
        source = os.path.join(out_dir, "latest") if cfg["init_from"] == "resume" else cfg["init_from"]
        prefer = ("latest",) if cfg["init_from"] == "resume" else ("best", "latest")
        model, tok, start_info, folder = load_checkpoint(source, "cpu", prefer)
        if cfg["init_from"] == "resume":
            trainer_state = load_trainer_state(folder)
        model.set_dropout(cfg["dropout"])
        if cfg["block_size"] > model.config.block_size:
            raise ConfigError(f"block_size={cfg['block_size']} is larger than the checkpoint's "
                              f"{model.config.block_size} ({folder})")
        data_tok = Tokenizer.load(os.path.join(data_dir, "tokenizer.json"))
        if data_tok.to_dict()["mergeable_ranks"] != tok.to_dict()["mergeable_ranks"]:
            raise ConfigError(f"data/{cfg['dataset']} was prepared with another tokenizer than {folder}; "
                              f"prepare it with --tokenizer {folder}/tokenizer.json")
        log(f"initialised from {folder} (step {start_info.get('step', '?')}, {start_info.get('task', '?')})")
    batch_fn, chars_per_token = load_data(cfg, tok)
    model.to(sysinfo["device"])
    n_params = model.num_params()
    log(f"profile {cfg['profile']} | device {sysinfo['device']} {sysinfo['dtype']} | {world} process(es) | "
        f"model {n_params / 1e6:.2f}M parameters ({model.config.n_layer} layers, {model.config.n_embd} wide, "
        f"vocab {model.config.vocab_size}) | task {cfg['task']} on data/{cfg['dataset']}")

    optimizers = model.optimizers(cfg["optimizer"], cfg["learning_rate"], cfg["weight_decay"],
                                  (cfg["beta1"], cfg["beta2"]), device_type)
    step, elapsed_before, best_val = 0, 0.0, float("inf")
    gen = torch.Generator().manual_seed(cfg["seed"] + 1000 * sysinfo["rank"])  # the data sampler
    if trainer_state is not None:
        for opt, sd in zip(optimizers, trainer_state["optimizers"]):
            opt.load_state_dict(sd)
        step, elapsed_before, best_val = trainer_state["step"], trainer_state["elapsed"], trainer_state["best_val"]
        rng = trainer_state["rng"][sysinfo["rank"] % len(trainer_state["rng"])]
        gen.set_state(rng["sampler"])
        torch.set_rng_state(rng["torch"])
        if device_type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"])
        log(f"resuming at step {step}")
    raw_model = model
    if cfg["compile"] and device_type == "cuda":
        model = torch.compile(model)
    if sysinfo["ddp"]:
        model = DDP(model, device_ids=[torch.device(sysinfo["device"]).index] if device_type == "cuda" else None)
    ctx, scaler = sysinfo["ctx"], sysinfo["scaler"]

    @torch.no_grad()
    def estimate_loss():
        """Mean loss on the same eval_iters batches each time (a fixed generator), so evaluations compare."""
        model.eval()
        out = {}
        for split in ("train", "val"):
            g = torch.Generator().manual_seed(12345)
            losses = []
            for _ in range(cfg["eval_iters"]):
                x, y, m = batch_fn(split, g)
                with ctx:
                    _, loss = raw_model(x, y, m)
                losses.append(loss.item())
            out[split] = sum(losses) / len(losses)
        model.train()
        return out

    def save(kind):
        """latest/ with the trainer state (and best/ without it) from rank 0; every rank's RNG is gathered."""
        rng = {"sampler": sampler_state_before_prefetch, "torch": torch.get_rng_state()}
        if device_type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state()
        rngs = [rng]
        if sysinfo["ddp"]:
            rngs = [None] * world
            dist.all_gather_object(rngs, rng)
        if not master:
            return
        info = {"task": cfg["task"], "dataset": cfg["dataset"], "step": step, "best_val_loss": best_val,
                "device": sysinfo["device"], "dtype": sysinfo["dtype"], "processes": world,
                "train_config": {k: v for k, v in cfg.items() if not k.startswith("_")},
                "init_from": start_info.get("train_config", {}).get("out_dir", cfg["init_from"])}
        state = {"optimizers": [o.state_dict() for o in optimizers], "step": step, "best_val": best_val,
                 "elapsed": elapsed_before + time.time() - t_start, "rng": rngs}
        save_checkpoint(os.path.join(out_dir, "latest"), raw_model, tok, info, state)
        if kind == "best":
            save_checkpoint(os.path.join(out_dir, "best"), raw_model, tok, info)

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C kills at once

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if master:
        os.makedirs(out_dir, exist_ok=True)
        if trainer_state is None and os.path.exists(os.path.join(out_dir, "log.jsonl")):
            os.remove(os.path.join(out_dir, "log.jsonl"))  # a fresh run starts a fresh log
    decay_iters = cfg["lr_decay_iters"] or cfg["max_iters"]
    max_seconds = cfg["max_seconds"]
    if max_seconds:
        bar = tqdm(total=round(max_seconds), initial=round(elapsed_before), unit="s", disable=not master,
                   desc=cfg["task"], bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}s [{elapsed}<{remaining}{postfix}]")
    else:
        bar = tqdm(total=cfg["max_iters"], initial=step, unit="it", disable=not master, desc=cfg["task"])
    t_start = time.time()
    t_last, tokens_since = t_start, 0
    sampler_state_before_prefetch = gen.get_state()  # a resumed run must draw the batch prefetched here again
    x, y, m = batch_fn("train", gen)
    model.train()
    while True:
        # one decision for all processes: rank 0's clock and signals (the LR must agree across ranks)
        elapsed = elapsed_before + time.time() - t_start
        clock = torch.tensor([elapsed], dtype=torch.float64, device=sysinfo["device"])
        stopping = torch.tensor([float(stop["signal"] is not None)], device=sysinfo["device"])
        if sysinfo["ddp"]:
            dist.broadcast(clock, 0)
            dist.all_reduce(stopping, op=dist.ReduceOp.MAX)
        elapsed, stopping = float(clock.item()), bool(stopping.item() > 0)
        # the schedule follows whichever budget runs out first: iterations, or wall-clock seconds if set
        progress = max(step / decay_iters, elapsed / max_seconds if max_seconds else 0.0)
        done = step >= cfg["max_iters"] or (max_seconds and elapsed >= max_seconds) or stopping
        lr = get_lr(cfg, step, progress)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

        if step % cfg["eval_interval"] == 0 or done:
            losses = estimate_loss()
            dt = time.time() - t_last
            tps = tokens_since * world / dt if tokens_since else 0.0
            row = {"step": step, "time": round(elapsed, 1), "train_loss": round(losses["train"], 4),
                   "val_loss": round(losses["val"], 4),
                   "val_bpc": round(losses["val"] / math.log(2) / chars_per_token["val"], 4), "lr": lr,
                   "tokens_per_sec": round(tps), "chars_per_sec": round(tps * chars_per_token["train"])}
            if device_type == "cuda" and tps:
                name = torch.cuda.get_device_name()
                peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
                if peak:
                    row["mfu"] = round(raw_model.flops_per_token(cfg["block_size"]) * tps / (peak * world), 4)
            improved = losses["val"] < best_val
            best_val = min(best_val, losses["val"])
            if master:
                log(f"step {step}: train {row['train_loss']:.4f} val {row['val_loss']:.4f} "
                    f"({row['val_bpc']:.3f} bits/char) lr {lr:.2e} {row['tokens_per_sec']:,} tok/s"
                    + (f" mfu {row['mfu']:.1%}" if "mfu" in row else ""))
                with open(os.path.join(out_dir, "log.jsonl"), "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                plot_runs([out_dir], os.path.join(out_dir, "loss.png"))
            save("best" if improved else "latest")
            t_last, tokens_since = time.time(), 0
        if done:
            break

        for micro in range(grad_accum):
            if sysinfo["ddp"]:  # synchronise gradients only on the last micro-step
                model.require_backward_grad_sync = micro == grad_accum - 1
            with ctx:
                _, loss = model(x, y, m)
                loss = loss / grad_accum
            tokens_since += x.numel()
            sampler_state_before_prefetch = gen.get_state()
            x, y, m = batch_fn("train", gen)  # fetch the next batch while the GPU works
            scaler.scale(loss).backward()
        if cfg["grad_clip"]:
            for opt in optimizers:
                scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg["grad_clip"])
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        step += 1
        if master and step % cfg["log_interval"] == 0:
            bar.set_postfix(loss=f"{loss.item() * grad_accum:.3f}", lr=f"{lr:.1e}")
        if max_seconds:  # never past the total: tqdm would then forget it
            bar.update(min(round(elapsed_before + time.time() - t_start), bar.total) - bar.n)
        else:
            bar.update(1)
    bar.close()
    if stop["signal"] is not None:
        log(f"stopped by signal {stop['signal']} at step {step}; saved {out_dir}/latest "
            f"(continue with --init_from=resume)")
    log(f"done: {step} steps, best val loss {best_val:.4f}; checkpoints in {out_dir}/best and {out_dir}/latest")
    if sysinfo["ddp"]:
        dist.destroy_process_group()


if __name__ == "__main__":
    run_main(main)
