"""Train MiniGLM: pretraining on data/DATASET/train.bin, or SFT on the SFT bins with the answer-only loss mask.

    python train.py config/pretrain.py                  # then: python train.py config/sft.py
    python train.py config/pretrain.py --max_iters=500 --batch_size=8
    torchrun --standalone --nproc_per_node=4 train.py config/pretrain.py     # several GPUs (DDP)

Defaults below, then the config file, then --key=value (see configurator.py). Runs on CUDA (bf16 autocast,
fused AdamW, torch.compile), Apple MPS or CPU. Every batch has the same shape: SFT examples are packed whole into
rows (attention kept inside each example), so nothing is padded to the longest and the compiled model never
recompiles. Every eval_interval it logs to OUT_DIR/log.jsonl, redraws OUT_DIR/loss.png and writes
OUT_DIR/latest/ (and best/ when validation loss improves). Ctrl-C or SIGTERM saves and exits;
init_from='resume' continues exactly where it stopped.
"""
import math
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from batches import Prefetcher, build_batches
from checkpoint import (CheckpointError, find_checkpoint, load_checkpoint, load_trainer_state, read_info,
                        save_checkpoint)
from compute import muon_speed_note, setup_system
from configurator import ConfigError, check_train_config, hardware_profile, load_config
from errors import run_main
from model import GPT, GPTConfig, gpu_peak_flops
from plotting import plot_runs
from runlog import append_row, truncate_log
from tokenizer import Tokenizer

# ---- defaults -------------------------------------------------------------------------------------------------
task = "pretrain"            # 'pretrain' (next token on the corpus) or 'sft' (loss on the assistant's replies only)
dataset = "jinyong"          # data/DATASET/ as written by prepare.py / prepare_sft.py
out_dir = "out/pretrain"
init_from = "scratch"        # 'scratch', 'resume' (continue out_dir/latest), or a checkpoint or run folder
overwrite = False            # start from scratch even where out_dir already holds a run (replaced at the first save)
profile = "auto"             # read by configs/: auto, gpu, cpu, tiny
# model
n_layer, n_head, n_kv_head, n_embd = 6, 8, 0, 512   # n_kv_head=0: as many as n_head; fewer: grouped-query attention
block_size = 512
dropout = 0.0                # on the embeddings and each block's outputs
attn_dropout = 0.0           # on the attention weights (slower: no fused attention kernel while training)
qk_norm = False
tie_embeddings = True
# optimisation
batch_size = 16              # rows of block_size tokens per micro-step on each process
gradient_accumulation_steps = 1   # micro-steps per optimizer step, over all processes together
prompt_loss_weight = 0.0     # SFT: weight of the loss on the rest of each example (questions), replies weigh 1
reply_start_tokens = 0       # SFT: the first this many tokens of each reply weigh reply_start_weight in training
reply_start_weight = 1.0     # (they choose which memorised answer follows); evaluation losses stay unweighted
sft_mix = 0.0                # pretraining: this share of each batch's rows are packed SFT examples (loss on replies)
sft_mix_extra = False        # True: those rows also draw the copies and --extra records that prepare_sft.py adds
text_mix = 0.0               # SFT: this share of each batch's rows are corpus windows (train.bin), every token weighed
freeze_embeddings = False    # keep the token embeddings (tied: the output layer too) as the starting model has them
max_iters = 2000             # optimizer steps; 0 means: as many as `epochs` takes
epochs = 0.0                 # passes over the training data (corpus or SFT tokens) when max_iters is 0; 0: auto_epochs
max_seconds = 0.0            # cap on training seconds (evaluation not counted); the LR schedule fits the first to end
optimizer = "adamw"          # 'adamw', or 'muon' (torch.optim.Muon for the block matrices, AdamW for the rest)
learning_rate = 1e-3         # AdamW's peak LR
muon_lr = 0.02               # Muon's peak LR (optimizer='muon'); the schedule scales both peaks alike
min_lr = 1e-4                # where the cosine ends, as a share of learning_rate for every parameter group
warmup_iters = 50
lr_decay_iters = 0           # 0 means the end of training
weight_decay = 0.1
beta1, beta2 = 0.9, 0.95
grad_clip = 1.0
# evaluation and logging
eval_interval = 100
eval_iters = 20
log_interval = 10
# system
device = "auto"              # auto, cpu, cuda, cuda:1, mps
dtype = "auto"               # auto: bf16 on CUDA (fp16 if unsupported) and on CPUs where it times faster; else fp32
compile = True               # torch.compile the model (CUDA only: on CPU the warm-up costs more than it saves)
threads = 0                  # CPU threads; 0 means all cores (shared out among local processes under torchrun)
seed = 1337
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (bool, int, float, str))}

def lr_multiplier(cfg, step, progress):
    """The schedule as a factor of each parameter group's own peak LR: linear warmup over warmup_iters steps,
    then a cosine from 1 down to min_lr/learning_rate as progress (the share of the post-warmup budget used)
    goes from 0 to 1."""
    if step < cfg["warmup_iters"]:
        return (step + 1) / (cfg["warmup_iters"] + 1)
    floor = cfg["min_lr"] / cfg["learning_rate"]
    return floor + (1 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def auto_epochs(tokens):
    """Passes over a training set of `tokens` tokens when no budget is given: a small corpus is worth many passes
    (memorising it is the point), a large one few before the model only memorises. 40 passes at 100k tokens
    (about where the gpu profile's validation loss bottomed out on the default corpus), falling as tokens^-0.7
    to about 5 at 2M tokens (a few million characters of novels), never below 1. A heuristic from one measured
    point; bench/gpu_check.sh records the curves to check it."""
    return float(min(40.0, max(1.0, 40.0 * (tokens / 100_000) ** -0.7)))


def check_out_dir(cfg):
    """A from-scratch run must not silently replace an earlier run's checkpoints and log."""
    if cfg["init_from"] == "resume" or cfg["overwrite"]:
        return
    try:
        found = find_checkpoint(cfg["out_dir"], ("latest", "best"))
    except CheckpointError:  # no checkpoint there: nothing to protect
        return
    raise ConfigError(f"{cfg['out_dir']} already holds a run ({found}); continue it with --init_from=resume or "
                      f"start over with --overwrite=True")


def build_model(cfg, data_dir, log):
    """(model, tokenizer, info of the checkpoint it started from, trainer state when resuming). A model loaded
    from a checkpoint keeps its shape: cfg's shape keys are set to it, so that config.json records what trained."""
    if cfg["init_from"] == "scratch":
        tok = Tokenizer.load(os.path.join(data_dir, "tokenizer.json"))
        try:
            mconf = GPTConfig(vocab_size=tok.vocab_size, block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                              n_head=cfg["n_head"], n_kv_head=cfg["n_kv_head"], n_embd=cfg["n_embd"],
                              dropout=cfg["dropout"], attn_dropout=cfg["attn_dropout"], qk_norm=cfg["qk_norm"],
                              tie_embeddings=cfg["tie_embeddings"])
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return GPT(mconf), tok, {}, None
    resume = cfg["init_from"] == "resume"
    source = os.path.join(cfg["out_dir"], "latest") if resume else cfg["init_from"]
    model, tok, info, folder = load_checkpoint(source, "cpu", ("latest",) if resume else ("best", "latest"))
    for key in ("task", "dataset") if resume else ():  # the saved place in the data means nothing in other data
        if info.get(key, cfg[key]) != cfg[key]:
            raise ConfigError(f"{folder} is a {key}={info[key]} run: resume it with --{key}={info[key]}, or start a "
                              f"new run from it with --init_from={folder} and another out_dir")
    model.set_dropout(cfg["dropout"], cfg["attn_dropout"])
    for key in ("n_layer", "n_head", "n_kv_head", "n_embd", "qk_norm", "tie_embeddings"):
        cfg[key] = getattr(model.config, key)  # the checkpoint's shape is trained, whatever the config said
    if cfg["block_size"] > model.config.block_size:
        raise ConfigError(f"block_size={cfg['block_size']} is larger than the checkpoint's "
                          f"{model.config.block_size} ({folder})")
    data_tok = Tokenizer.load(os.path.join(data_dir, "tokenizer.json"))
    if data_tok.to_dict()["mergeable_ranks"] != tok.to_dict()["mergeable_ranks"]:
        raise ConfigError(f"data/{cfg['dataset']} was prepared with another tokenizer than {folder}; "
                          f"prepare it with --tokenizer {folder}/tokenizer.json")
    log(f"initialised from {folder} (step {info.get('step', '?')}, {info.get('task', '?')})")
    return model, tok, info, load_trainer_state(folder) if resume else None


def optimizer_step(optimizers, scaler, params, grad_clip):
    """Step every optimizer on the accumulated gradients (unscaled, clipped), then zero them. With float16's loss
    scaling an overflow skips every optimizer, not only its own: the clip's norm over all parameters would have
    turned the other's finite gradients to zeros or NaNs (Muon's block matrices beside AdamW's rest)."""
    skip = False
    if grad_clip:
        for opt in optimizers:
            scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        skip = scaler.is_enabled() and len(optimizers) > 1 and not bool(torch.isfinite(norm))
    if not skip:
        for opt in optimizers:
            scaler.step(opt)
    scaler.update()  # lowers the scale after an overflow, stepped or not
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)


@torch.no_grad()
def evaluate(model, eval_batches, ctx, device):
    """Mean loss of each split's fixed evaluation batches."""
    model.eval()
    out = {}
    for split, batches in eval_batches.items():
        losses = []
        for b in batches:
            b = {k: v.to(device) for k, v in b.items()}
            with ctx:
                _, loss = model(b["x"], b["y"], b.get("w"), doc_ids=b.get("doc"))
            losses.append(loss)
        out[split] = torch.stack(losses).mean().item()
    model.train()
    return out


def main():
    cfg = load_config(DEFAULTS, sys.argv[1:])
    cfg["profile"] = hardware_profile()
    check_train_config(cfg)
    system = setup_system(cfg)
    master, device_type, world = system["master"], system["device_type"], system["world"]
    if cfg["gradient_accumulation_steps"] % world:
        raise ConfigError(f"gradient_accumulation_steps={cfg['gradient_accumulation_steps']} must be a multiple of "
                          f"the number of processes ({world})")
    grad_accum = cfg["gradient_accumulation_steps"] // world
    torch.manual_seed(cfg["seed"] + system["rank"])
    data_dir, out_dir = os.path.join("data", cfg["dataset"]), cfg["out_dir"]
    log = (lambda *a: tqdm.write(" ".join(str(x) for x in a))) if master else (lambda *a: None)
    check_out_dir(cfg)

    # ---- build: model, data, optimizers, and the state a resumed run continues from
    model, tok, start_info, trainer_state = build_model(cfg, data_dir, log)
    train_batches, eval_batches, chars_per_token, per_epoch, per_step = build_batches(cfg, tok, data_dir,
                                                                                   system["rank"], world)
    if cfg["max_iters"] == 0:  # a budget in passes over the data, whatever its size
        cfg["epochs"] = cfg["epochs"] or auto_epochs(per_epoch)
        cfg["max_iters"] = max(1, math.ceil(cfg["epochs"] * per_epoch / per_step))
    model.to(system["device"])
    model.embed.weight.requires_grad_(not cfg["freeze_embeddings"])
    timed = "" if system["bf16_speedup"] is None else f" (bf16 matmuls {system['bf16_speedup']:.2f}x float32's)"
    log(f"profile {cfg['profile']} | device {system['device']} {system['dtype']}{timed} | {world} process(es) | "
        f"model {model.num_params() / 1e6:.2f}M parameters ({model.config.n_layer} layers, {model.config.n_embd} "
        f"wide, vocab {model.config.vocab_size}) | task {cfg['task']} on data/{cfg['dataset']} | "
        f"{cfg['max_iters']} steps, {cfg['max_iters'] * per_step / per_epoch:.1f} epochs")
    if note := muon_speed_note(cfg, system):
        log(note)
    optimizers = model.optimizers(cfg["optimizer"], cfg["learning_rate"], cfg["weight_decay"],
                                  (cfg["beta1"], cfg["beta2"]), device_type, cfg["muon_lr"])
    for opt in optimizers:  # the schedule scales each group's own peak LR
        for group in opt.param_groups:
            group["peak_lr"] = group["lr"]
    step, train_seconds, warmup_seconds, best_val = 0, 0.0, None, float("inf")
    if trainer_state is not None:
        if "train_seconds" not in trainer_state:
            raise ConfigError(f"{out_dir}/latest was written by an older MiniGLM whose runs cannot be resumed; "
                              f"start over with --overwrite=True")
        try:  # another optimizer or freeze_embeddings than the run had makes other parameter groups
            if len(optimizers) != len(trainer_state["optimizers"]):
                raise ValueError("another number of optimizers")
            for opt, sd in zip(optimizers, trainer_state["optimizers"]):
                opt.load_state_dict(sd)
        except ValueError as e:
            raise ConfigError(f"{out_dir}/latest's optimizer state does not fit this run ({e}); resume with the "
                              f"optimizer and freeze_embeddings it was trained with") from None
        step, train_seconds, best_val = trainer_state["step"], trainer_state["train_seconds"], trainer_state["best_val"]
        warmup_seconds = trainer_state["warmup_seconds"]
        rng = trainer_state["rng"][system["rank"] % len(trainer_state["rng"])]
        train_batches.set_state(rng["batches"])
        torch.set_rng_state(rng["torch"])
        if device_type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"])
        log(f"resuming at step {step}")
    raw_model = model
    if cfg["compile"] and device_type == "cuda":
        model = model.compiled()  # the loss stays out of the graph (model.GPT.compiled says why)
    if system["ddp"]:
        # the only buffers are the rotary tables, computed alike on every rank: no broadcast before each forward
        model = DDP(model, device_ids=[torch.device(system["device"]).index] if device_type == "cuda" else None,
                    broadcast_buffers=False)
    ctx, scaler = system["ctx"], system["scaler"]
    loader = Prefetcher(train_batches, system["device"])
    batch_state, batch = loader.next()

    def save(improved):
        """latest/ with the trainer state (and best/ without it) from rank 0; every rank's sampler and RNG state
        (the sampler's from before the batch not yet trained on) is gathered."""
        rng = {"batches": batch_state, "torch": torch.get_rng_state()}
        if device_type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state()
        rngs = [rng]
        if system["ddp"]:
            rngs = [None] * world
            dist.all_gather_object(rngs, rng)
        if not master:
            return
        info = {"task": cfg["task"], "dataset": cfg["dataset"], "step": step, "best_val_loss": best_val,
                "device": system["device"], "dtype": system["dtype"], "processes": world,
                "train_config": {k: v for k, v in cfg.items() if not k.startswith("_")},
                "init_from": start_info.get("train_config", {}).get("out_dir", cfg["init_from"])}
        state = {"optimizers": [o.state_dict() for o in optimizers], "step": step, "best_val": best_val,
                 "train_seconds": train_seconds, "warmup_seconds": warmup_seconds, "rng": rngs}
        save_checkpoint(os.path.join(out_dir, "latest"), raw_model, tok, info, state)
        if improved:
            save_checkpoint(os.path.join(out_dir, "best"), raw_model, tok, info)

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C kills at once

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if master:
        os.makedirs(out_dir, exist_ok=True)
        if trainer_state is not None:
            truncate_log(out_dir, step)  # the rows from `step` on are logged again by this run
    fresh_log = trainer_state is None  # an overwritten run's log is replaced at this run's first save
    relog = trainer_state is not None  # a resumed run logs its first step again, evaluation step or not

    # ---- the loop: [evaluate and save] -> stop? -> one optimizer step
    max_seconds, decay_iters = cfg["max_seconds"], cfg["lr_decay_iters"] or cfg["max_iters"]
    bar = tqdm(total=cfg["max_iters"], initial=step, unit="step", disable=not master, desc=cfg["task"])
    sync = torch.zeros(2, device=system["device"], dtype=torch.float32)  # [train seconds, stop], under DDP only
    seconds, seconds_at_eval, examples_at_eval, tokens_since = train_seconds, train_seconds, None, 0
    first_train_loss = None  # step 0's loss of a run from scratch: it must have fallen once warmup is over
    t_step, loss = time.perf_counter(), None
    model.train()
    try:
        while True:
            if not system["ddp"]:
                seconds, stopping = train_seconds, stop["signal"] is not None
            elif step % cfg["log_interval"] == 0 or step % cfg["eval_interval"] == 0:
                # one decision for all processes, from rank 0's clock and anyone's signal (the LR must agree)
                sync[0], sync[1] = train_seconds, float(stop["signal"] is not None)
                dist.broadcast(sync[:1], 0)
                dist.all_reduce(sync[1:], op=dist.ReduceOp.MAX)
                seconds, stopping = float(sync[0]), bool(sync[1] > 0)
            else:  # between exchanges every process keeps the last agreed clock
                stopping = False
            done = step >= cfg["max_iters"] or bool(max_seconds and seconds >= max_seconds) or stopping
            if step == cfg["warmup_iters"] and warmup_seconds is None:
                warmup_seconds = seconds
            # the cosine follows whichever budget runs out first, counted from the end of warmup
            progress = (step - cfg["warmup_iters"]) / max(1, decay_iters - cfg["warmup_iters"])
            if max_seconds and warmup_seconds is not None:
                progress = max(progress, (seconds - warmup_seconds) / max(1e-9, max_seconds - warmup_seconds))
            mult = lr_multiplier(cfg, step, progress)
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = group["peak_lr"] * mult

            if step % cfg["eval_interval"] == 0 or done or relog:
                relog = False
                losses = evaluate(raw_model, eval_batches, ctx, system["device"])
                span = train_seconds - seconds_at_eval
                tps = tokens_since * world / span if tokens_since and span > 0 else 0.0
                row = {"step": step, "time": round(seconds, 1), "train_loss": round(losses["train"], 4),
                       "val_loss": round(losses["val"], 4),
                       "val_bpc": round(losses["val"] / math.log(2) / chars_per_token["val"], 4),
                       "lr": cfg["learning_rate"] * mult, "tokens_per_sec": round(tps),
                       "chars_per_sec": round(tps * chars_per_token["train"])}
                examples = train_batches.examples_done(batch_state)
                if examples is not None and examples_at_eval is not None and span > 0:
                    row["examples_per_sec"] = round((examples - examples_at_eval) * world / span, 1)
                examples_at_eval = examples
                if device_type == "cuda" and tps:
                    peak = gpu_peak_flops()
                    if peak:
                        row["mfu"] = round(raw_model.flops_per_token(cfg["block_size"]) * tps / (peak * world), 4)
                improved = losses["val"] < best_val
                best_val = min(best_val, losses["val"])
                save(improved)
                if master:
                    if fresh_log:
                        truncate_log(out_dir, 0)
                        fresh_log = False
                    append_row(out_dir, row)
                    plot_runs([out_dir], os.path.join(out_dir, "loss.png"))
                    log(f"step {step}: train {row['train_loss']:.4f} val {row['val_loss']:.4f} "
                        f"({row['val_bpc']:.3f} bits/char) lr {row['lr']:.2e} {row['tokens_per_sec']:,} tok/s"
                        + (f" mfu {row['mfu']:.1%}" if "mfu" in row else ""))
                    if step == 0 and cfg["init_from"] == "scratch":  # fine-tuning's loss may rise at first
                        first_train_loss = losses["train"]
                    elif first_train_loss is not None and step >= cfg["warmup_iters"]:
                        # a broken step (all-zero gradients from a compiler bug) runs without an error: say so
                        if losses["train"] > 0.99 * first_train_loss:
                            log(f"warning: the training loss has not fallen in {step} steps ({first_train_loss:.4f} "
                                f"-> {losses['train']:.4f}): the weights are not learning (a learning rate too "
                                f"small, or wrong gradients: on a GPU, python bench/cuda_grad_check.py)")
                        first_train_loss = None  # checked once
                seconds_at_eval, tokens_since = train_seconds, 0
                t_step = time.perf_counter()  # evaluation and saving are not training time
            if done:
                break

            for micro in range(grad_accum):
                if system["ddp"]:  # synchronise gradients only on the last micro-step
                    model.require_backward_grad_sync = micro == grad_accum - 1
                with ctx:
                    _, loss = model(batch["x"], batch["y"], batch.get("w"), doc_ids=batch.get("doc"))
                scaler.scale(loss / grad_accum).backward()
                tokens_since += batch["x"].numel()
                batch_state, batch = loader.next()  # already made by the loader's thread; the copy overlaps
            optimizer_step(optimizers, scaler, raw_model.parameters(), cfg["grad_clip"])
            step += 1
            now = time.perf_counter()
            train_seconds, t_step = train_seconds + now - t_step, now
            if master and step % cfg["log_interval"] == 0:  # the only host-device sync outside evaluation
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{cfg['learning_rate'] * mult:.1e}")
            bar.update(1)
    finally:  # an error message must not land on the progress bar's line
        bar.close()
        loader.close()
    if stop["signal"] is not None:
        log(f"stopped by signal {stop['signal']} at step {step}; saved {out_dir}/latest "
            f"(continue with --init_from=resume)")
    log(f"done: {step} steps, best val loss {best_val:.4f}; checkpoints in {out_dir}/best and {out_dir}/latest")
    best = os.path.join(out_dir, "best")  # the scripts load best/: it must not silently be the untuned model
    if master and cfg["task"] == "sft" and step > 0 and os.path.isdir(best) and read_info(best)["step"] == 0:
        log(f"warning: validation loss never fell below the starting model's, so {out_dir}/best is the model SFT "
            f"started from (were the validation questions in pretraining's Q&A rows?); the tuned one is "
            f"{out_dir}/latest")
    if system["ddp"]:
        dist.destroy_process_group()


if __name__ == "__main__":
    run_main(main)
