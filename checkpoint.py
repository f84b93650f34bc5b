"""Checkpoints: self-contained folders that nothing needs to unpickle.

A run folder (out/pretrain) holds best/ (lowest validation loss) and latest/. Each is a checkpoint folder:
  model.safetensors   the weights
  config.json         model configuration, training configuration, step, losses, kind (pretrain or sft)
  tokenizer.json      an exact copy of the tokenizer
  trainer_state.pt    (latest/ only) optimizer, step, RNG and sampler state for init_from='resume', plain
                      tensors and numbers, read with torch.load(weights_only=True)
A folder is written beside its final place and swapped in with renames, so killing the process at any moment
leaves either the old or the new checkpoint, never a mix; a loader that finds only NAME.old uses it.
"""
import json
import os
import shutil

import torch
from safetensors.torch import load_model, save_model

from errors import UserError
from model import GPT, GPTConfig
from tokenizer import Tokenizer


class CheckpointError(UserError):
    pass


def save_checkpoint(folder, model, tokenizer, info, trainer_state=None):
    tmp, old = folder + ".tmp", folder + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_model(model, os.path.join(tmp, "model.safetensors"))  # handles the tied lm_head/embedding
    with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
        json.dump({**info, "model": model.config.to_dict()}, f, ensure_ascii=False, indent=2)
    tokenizer.save(os.path.join(tmp, "tokenizer.json"))
    if trainer_state is not None:
        torch.save(trainer_state, os.path.join(tmp, "trainer_state.pt"))
    if os.path.exists(folder):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
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


def read_info(folder):
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}/config.json: unreadable ({e})") from None


def load_checkpoint(path, device="cpu", prefer=("best", "latest")):
    """(model in eval mode on device, tokenizer, info dict, folder) from a checkpoint or run folder."""
    folder = find_checkpoint(path, prefer)
    info = read_info(folder)
    if "model" not in info:
        raise CheckpointError(f"{folder}/config.json: missing key 'model' (the model configuration)")
    model = GPT(GPTConfig.from_dict(info["model"]))
    missing, unexpected = load_model(model, os.path.join(folder, "model.safetensors"), strict=False, device="cpu")
    if missing or unexpected:
        raise CheckpointError(f"{folder}/model.safetensors does not match config.json "
                              f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    tokenizer = Tokenizer.load(os.path.join(folder, "tokenizer.json"))
    return model.to(device).eval(), tokenizer, info, folder


def load_trainer_state(folder):
    path = os.path.join(folder, "trainer_state.pt")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not found; init_from='resume' needs the latest/ folder of an earlier run")
    return torch.load(path, map_location="cpu", weights_only=True)
