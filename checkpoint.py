"""Checkpoints: self-contained folders that nothing needs to unpickle.

A run folder (out/pretrain) holds best/ (lowest validation loss) and latest/. Each is a checkpoint folder:
  model.safetensors   the weights
  config.json         model configuration, training configuration, step, losses, kind (pretrain or sft)
  tokenizer.json      an exact copy of the tokenizer
  trainer_state.pt    (latest/ only) optimizer, step, RNG and sampler state for init_from='resume', plain
                      tensors and numbers, read with torch.load(weights_only=True)
A folder is written beside its final place (NAME.tmp), fsynced, and swapped in with two renames (NAME -> NAME.old,
NAME.tmp -> NAME), the parent folder fsynced after each. Killing the process at any moment, or losing power once
the save has returned, leaves either the old or the new checkpoint, never a mix; a loader that finds only NAME.old
uses it. A save that fails (full disk, file-size limit) raises CheckpointError and leaves the old checkpoint.
Every way a checkpoint can be unreadable (truncated or edited files, a config of the wrong shape) is a
CheckpointError too: one line for the user, never a traceback.
"""
import contextlib
import io
import json
import os
import re
import shutil
import signal
import threading

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from errors import UserError
from fsutil import atomic_write, fsync_dir, fsync_file
from model import GPT, GPTConfig
from tokenizer import Tokenizer, TokenizerError

TRAINER_STATE_KEYS = ("optimizers", "step", "rng")  # what init_from='resume' cannot do without


class CheckpointError(UserError):
    pass


_fault_counts = {}


def _fault_point(name):
    """TEST-ONLY hook for the fault suite: with MINIGLM_FAULT=NAME (or NAME:N, the N-th time this process
    reaches NAME), the process kills itself with SIGKILL here, as a power cut or kill -9 would. Points:
    ckpt_after_weights, ckpt_before_swap, ckpt_between_renames. Never set it outside tests."""
    wanted = os.environ.get("MINIGLM_FAULT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point == name:
        _fault_counts[name] = _fault_counts.get(name, 0) + 1
        if _fault_counts[name] == int(nth or 1):
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _os_error(e):
    """The OSError behind a library's write failure: safetensors says '... (os error 28)', torch.save only
    'unexpected pos' (we write its bytes ourselves so that it cannot hide the cause)."""
    if isinstance(e, OSError):
        return e
    found = re.search(r"os error (\d+)", str(e))
    return OSError(int(found.group(1)), os.strerror(int(found.group(1)))) if found else None


def save_checkpoint(folder, model, tokenizer, info, trainer_state=None):
    """Write the checkpoint folder (see the module docstring) atomically and durably. Any OS error (full disk,
    file-size limit: EFBIG rather than SIGXFSZ, which is ignored while saving) raises CheckpointError with one
    line naming the folder and the error; NAME.tmp is removed and the previous checkpoint stays whole."""
    folder = os.path.normpath(folder)
    tmp, old = folder + ".tmp", folder + ".old"
    parent = os.path.dirname(os.path.abspath(folder))
    in_main_thread = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGXFSZ")
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN) if in_main_thread else None
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        save_model(model, os.path.join(tmp, "model.safetensors"))  # handles the tied lm_head/embedding
        _fault_point("ckpt_after_weights")
        with atomic_write(os.path.join(tmp, "config.json")) as f:
            json.dump({**info, "model": model.config.to_dict()}, f, ensure_ascii=False, indent=2)
        tokenizer.save(os.path.join(tmp, "tokenizer.json"))
        if trainer_state is not None:
            buffer = io.BytesIO()
            torch.save(trainer_state, buffer)
            with atomic_write(os.path.join(tmp, "trainer_state.pt"), "wb") as f:
                f.write(buffer.getbuffer())
        for name in os.listdir(tmp):
            fsync_file(os.path.join(tmp, name))
        fsync_dir(tmp)
        _fault_point("ckpt_before_swap")
        if os.path.exists(folder):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            fsync_dir(parent)
        _fault_point("ckpt_between_renames")
        os.replace(tmp, folder)
        fsync_dir(parent)
    except (OSError, SafetensorError) as e:
        cause = _os_error(e)
        if cause is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(folder) and os.path.exists(old):
            with contextlib.suppress(OSError):  # failed between the renames: put the previous checkpoint back
                os.replace(old, folder)
        reason = f"{cause.strerror}, errno {cause.errno}" if cause.strerror else str(cause)
        kept = "the previous checkpoint there is kept" if os.path.exists(folder) else "nothing was written there"
        raise CheckpointError(f"{folder}: could not save the checkpoint ({reason}); {kept}") from None
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGXFSZ, previous_handler)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(path, prefer=("best", "latest")):
    """A checkpoint folder from a path that is one, or a run folder holding best/ or latest/."""
    candidates = [path] + [os.path.join(path, name) for name in prefer]
    for c in candidates:
        for folder in (c, c + ".old"):
            if os.path.isfile(os.path.join(folder, "model.safetensors")) and \
                    os.path.isfile(os.path.join(folder, "config.json")):
                return folder
    raise CheckpointError(f"{path}: no checkpoint there (expected model.safetensors and config.json in it or in "
                          f"its {' or '.join(prefer)}/ folder); train one with python train.py config/pretrain.py")


def _first_line(e):
    """An exception in one short line (torch's 'Error(s) in loading state_dict for GPT:' needs its next line)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    return f"{type(e).__name__}: {text[:240]}" if text else type(e).__name__


def read_info(folder):
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}/config.json: unreadable ({e})") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{folder}/config.json: expected a JSON object, found a {type(info).__name__}")
    return info


def load_checkpoint(path, device="cpu", prefer=("best", "latest")):
    """(model in eval mode on device, tokenizer, info dict, folder) from a checkpoint or run folder. A checkpoint
    that cannot be read whole and sound raises CheckpointError with one line naming the file."""
    folder = find_checkpoint(path, prefer)
    info = read_info(folder)
    if not isinstance(info.get("model"), dict):
        raise CheckpointError(f"{folder}/config.json: missing or malformed key 'model' (the model configuration)")
    try:
        model = GPT(GPTConfig.from_dict(info["model"]))
    except Exception as e:  # wrong types or shapes in an edited config: any error means the file is not usable
        raise CheckpointError(f"{folder}/config.json: the model configuration is invalid ({_first_line(e)})") from None
    weights = os.path.join(folder, "model.safetensors")
    try:
        missing, unexpected = load_model(model, weights, strict=False, device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:  # truncated, edited, or of another shape
        raise CheckpointError(f"{weights}: unreadable or does not match config.json ({_first_line(e)})") from None
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match config.json "
                              f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise CheckpointError(f"{weights}: holds NaN or infinite weights (a damaged file or a diverged run)")
    try:
        tokenizer = Tokenizer.load(os.path.join(folder, "tokenizer.json"))
    except TokenizerError as e:
        raise CheckpointError(str(e)) from None
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"{folder}/tokenizer.json has {tokenizer.vocab_size} tokens, more than the model's "
                              f"{model.config.vocab_size}; the files of this checkpoint do not belong together")
    return model.to(device).eval(), tokenizer, info, folder


def load_trainer_state(folder):
    """The trainer state of a latest/ folder (plain tensors and numbers; weights_only=True unpickles nothing
    else). A missing, truncated or edited file raises CheckpointError."""
    path = os.path.join(folder, "trainer_state.pt")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not found; init_from='resume' needs the latest/ folder of an earlier run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, a forbidden pickle, ...: all mean the file cannot be used
        raise CheckpointError(f"{path}: unreadable ({_first_line(e)})") from None
    if not isinstance(state, dict) or any(k not in state for k in TRAINER_STATE_KEYS):
        raise CheckpointError(f"{path}: not a trainer state (expected a dict with {', '.join(TRAINER_STATE_KEYS)})")
    return state
