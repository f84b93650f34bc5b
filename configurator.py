"""Configuration in nanoGPT's manner: defaults in the script, then a config file (plain Python), then --key=value.

    python train.py config/pretrain.py --batch_size=16 --compile=False

The config folder is configs/; config/NAME.py (and a bare NAME) resolve to it. An unknown key, or a value of
another type than the default's, is a one-line error that lists what is valid.
"""
import ast
import math
import os

import torch

from errors import UserError


class ConfigError(UserError):
    pass


def hardware_profile():
    """'gpu' for a CUDA GPU, else 'cpu'; MINIGLM_PROFILE (or --profile=) overrides, e.g. 'tiny' for smoke tests."""
    chosen = os.environ.get("MINIGLM_PROFILE", "auto")
    if chosen != "auto":
        if chosen not in ("gpu", "cpu", "tiny"):
            raise ConfigError(f"profile {chosen!r}: expected auto, gpu, cpu or tiny")
        return chosen
    return "gpu" if torch.cuda.is_available() else "cpu"


def resolve_config_path(arg):
    candidates = [arg]
    if arg.startswith(("config/", "config\\")):
        candidates.append("configs" + arg[len("config"):])
    if not arg.endswith(".py"):
        candidates.append(os.path.join("configs", arg + ".py"))
    here = os.path.dirname(os.path.abspath(__file__))  # also resolve from the repository when run elsewhere
    candidates += [os.path.join(here, c) for c in list(candidates) if not os.path.isabs(c)]
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise ConfigError(f"config file {arg}: not found (looked for {', '.join(candidates[:3])})")


def _coerce(key, value, default, source):
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif default is None or isinstance(value, type(default)):
        return value
    raise ConfigError(f"{source}: {key}={value!r} is a {type(value).__name__}; expected a {type(default).__name__} "
                      f"like the default {default!r}")


def _unknown(key, defaults, source):
    valid = ", ".join(sorted(defaults))
    return ConfigError(f"{source}: unknown key '{key}'. Valid keys: {valid}")


def load_config(defaults, argv):
    """The defaults updated by an optional config file and --key=value arguments, type-checked."""
    config = dict(defaults)
    for arg in argv:  # the profile must be known before a config file reads it
        if arg.startswith("--profile="):
            os.environ["MINIGLM_PROFILE"] = arg.split("=", 1)[1]
    for arg in argv:
        if not arg.startswith("--"):
            path = resolve_config_path(arg)
            namespace = {"__file__": path}
            with open(path, encoding="utf-8") as f:
                code = compile(f.read(), path, "exec")
            try:
                exec(code, namespace)
            except UserError:
                raise
            except Exception as e:
                raise ConfigError(f"{path}: failed to run ({type(e).__name__}: {e})") from None
            for key, value in namespace.items():
                if key.startswith("_") or callable(value) or type(value).__name__ == "module":
                    continue
                if key not in defaults:
                    raise _unknown(key, defaults, path)
                config[key] = _coerce(key, value, defaults[key], path)
            continue
        if "=" not in arg:
            raise ConfigError(f"argument {arg}: expected --key=value")
        key, raw = arg[2:].split("=", 1)
        if key not in defaults:
            raise _unknown(key, defaults, "command line")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare word is a string
        if isinstance(defaults[key], str) and not isinstance(value, str):
            value = raw
        config[key] = _coerce(key, value, defaults[key], "command line")
    return config


def _number(low, high=None, low_open=False, high_open=True):
    """A check that a value is a finite number in a range, and the range in words."""
    def ok(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > low if low_open else v >= low) and (high is None or (v < high if high_open else v <= high))
    if high is None:
        words = f"a number above {low}" if low_open else f"{low} or more"
    else:
        words = f"a number from {low} up to {'but not including ' if high_open else ''}{high}"
    return ok, words


def _one_of(*choices):
    return (lambda v: v in choices), " or ".join(repr(c) for c in choices)


TRAIN_CONFIG_RANGES = {
    "batch_size": _number(1), "gradient_accumulation_steps": _number(1), "eval_interval": _number(1),
    "eval_iters": _number(1), "log_interval": _number(1), "max_iters": _number(0), "epochs": _number(0),
    "max_seconds": _number(0), "warmup_iters": _number(0), "lr_decay_iters": _number(0),
    "learning_rate": _number(0, low_open=True),
    "muon_lr": _number(0, low_open=True), "min_lr": _number(0), "dropout": _number(0, 1), "attn_dropout": _number(0, 1),
    "weight_decay": _number(0), "beta1": _number(0, 1),
    "beta2": _number(0, 1), "grad_clip": _number(0), "optimizer": _one_of("adamw", "muon"),
    "task": _one_of("pretrain", "sft"), "sft_mix": _number(0, 1), "text_mix": _number(0, 1),
    "prompt_loss_weight": _number(0), "reply_start_tokens": _number(0), "reply_start_weight": _number(0),
    "block_size": _number(2), "n_layer": _number(1), "n_head": _number(1), "n_embd": _number(1),
    "n_kv_head": _number(0), "threads": _number(0),
}


def check_train_config(cfg):
    """Raise ConfigError, one line naming the key, the value and the expected range, for the first value of cfg
    outside its range (TRAIN_CONFIG_RANGES); keys absent from cfg are skipped. Types are load_config's concern."""
    for key, (ok, expected) in TRAIN_CONFIG_RANGES.items():
        if key in cfg and not ok(cfg[key]):
            raise ConfigError(f"{key}={cfg[key]!r}: expected {expected}")
