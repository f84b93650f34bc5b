"""The fault suite: kill -9 during training and inside checkpoint writes, file-size limits and full disks, damaged
checkpoint files against the loaders, torn logs, and bad values. Faults are injected, never waited for: kills at
the test-only hook points of checkpoint.save_checkpoint (MINIGLM_FAULT) and at random moments, RLIMIT_FSIZE in
child processes, files cut short or edited by the tests themselves.
"""
import errno
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from checkpoint import CheckpointError, load_checkpoint, load_trainer_state, save_checkpoint
from configurator import ConfigError, check_train_config
from conftest import REPO, TINY_MODEL, corpus_text, free_port, run_script, user_error, write_jsonl
from engine import Engine, SamplingError, SamplingParams
from errors import run_main
from fsutil import atomic_output_dir, atomic_write
from runlog import append_row, read_log, truncate_log

FAST = ["--dataset=tiny", "--warmup_iters=2", "--learning_rate=3e-3", "--eval_interval=2", *TINY_MODEL]
PRE = ["--dataset=tiny", "--eval_interval=30", "--learning_rate=3e-3", "--warmup_iters=5", *TINY_MODEL]  # as out/pre


def train_cmd(*args):
    return [sys.executable, os.path.join(REPO, "train.py"), *args]


def snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = fh.read()
    return out


def log_steps(run):
    rows, bad = read_log(run)
    return [r["step"] for r in rows], bad


def leftovers(run):
    return sorted(n for n in os.listdir(run) if n.endswith((".tmp", ".old")) or ".tmp" in n)


# ---- fsutil ---------------------------------------------------------------------------------------------------
def test_atomic_write_is_all_or_nothing_and_fsyncs(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half of the new")
            raise RuntimeError("killed midway")
    assert target.read_text(encoding="utf-8") == "old" and os.listdir(tmp_path) == ["f.txt"]
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    with atomic_write(target) as f:
        f.write("新的")
    with atomic_write(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert target.read_text(encoding="utf-8") == "新的" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert len(synced) == 4  # each file, then its folder
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "f.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # the usual permissions, not mkstemp's 0600


def test_output_dir_interrupted_midway_leaves_no_meta_file(tmp_path, monkeypatch):
    final = tmp_path / "data"
    final.mkdir()
    for name, text in (("a.bin", "old a"), ("b.bin", "old b"), ("meta.json", "old meta")):
        (final / name).write_text(text)
    real_replace, calls = os.replace, []

    def replace_then_crash(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_crash)
    with pytest.raises(OSError):
        with atomic_output_dir(final) as tmp:
            for name in ("a.bin", "b.bin", "meta.json"):
                with open(os.path.join(tmp, name), "w") as f:
                    f.write("new " + name)
    # the new a.bin is in, the old b.bin is still there: and no meta.json vouches for the mix
    assert sorted(os.listdir(final)) == ["a.bin", "b.bin"] and (final / "a.bin").read_text() == "new a.bin"
    assert not [n for n in os.listdir(tmp_path) if "tmp" in n]
    monkeypatch.setattr(os, "replace", real_replace)
    with atomic_output_dir(final) as tmp:
        for name in ("a.bin", "meta.json"):
            with open(os.path.join(tmp, name), "w") as f:
                f.write("v3 " + name)
    assert (final / "meta.json").read_text() == "v3 meta.json"


# ---- the training log -----------------------------------------------------------------------------------------
def test_log_rows_survive_torn_lines_and_truncation(tmp_path):
    assert read_log(tmp_path) == ([], 0) and truncate_log(tmp_path, 5) == (0, 0)
    for step in (0, 5, 10):
        append_row(tmp_path, {"step": step, "val_loss": 1.0 / (step + 1)})
    with open(tmp_path / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 15, "val_lo')  # a crash in the middle of a row
    assert log_steps(tmp_path) == ([0, 5, 10], 1)
    append_row(tmp_path, {"step": 15, "val_loss": 0.1})  # starts on a new line: the new row stays whole
    with open(tmp_path / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('[1, 2]\nnot json\n{"step": "x"}\n\n')
    assert log_steps(tmp_path) == ([0, 5, 10, 15], 4)
    assert truncate_log(tmp_path, 10) == (2, 6)
    assert log_steps(tmp_path) == ([0, 5], 0)
    assert (tmp_path / "log.jsonl").read_text(encoding="utf-8").endswith("}\n")


# ---- configuration and sampling values -----------------------------------------------------------------------
BAD_TRAIN_VALUES = [("batch_size", 0), ("gradient_accumulation_steps", 0), ("eval_interval", 0), ("eval_iters", 0),
                    ("log_interval", 0), ("max_iters", -1), ("epochs", -1.0), ("max_seconds", -1.0),
                    ("warmup_iters", -1), ("lr_decay_iters", -5), ("learning_rate", -1e-3), ("learning_rate", 0.0),
                    ("learning_rate", float("nan")), ("min_lr", -1e-4), ("dropout", 1.0), ("dropout", -0.1),
                    ("weight_decay", -0.1), ("beta1", 1.0), ("beta2", -0.5), ("grad_clip", -1.0),
                    ("optimizer", "sgd"), ("task", "rl"), ("sft_mix", 1.0), ("prompt_loss_weight", -1.0),
                    ("reply_start_tokens", -1), ("reply_start_weight", -2.0), ("block_size", 1), ("n_layer", 0),
                    ("n_head", 0), ("n_embd", 0), ("n_kv_head", -1), ("threads", -1)]


@pytest.mark.parametrize("key,value", BAD_TRAIN_VALUES)
def test_train_config_values_out_of_range_are_one_line_errors(key, value):
    from train import DEFAULTS
    check_train_config(DEFAULTS)  # the defaults themselves are in range
    with pytest.raises(ConfigError) as e:
        check_train_config({**DEFAULTS, key: value})
    message = str(e.value)
    assert message.startswith(f"{key}={value!r}: expected ") and "\n" not in message
    check_train_config({k: v for k, v in DEFAULTS.items() if k != key})  # an absent key is not checked


@pytest.mark.parametrize("knob,value", [("max_new_tokens", 0), ("temperature", -0.5), ("top_k", -5), ("top_p", 0.0),
                                        ("top_p", 1.5), ("repetition_penalty", 0.0), ("temperature", float("inf"))])
def test_sampling_values_out_of_range_are_one_line_errors(knob, value):
    with pytest.raises(SamplingError, match=f"^{knob}="):
        SamplingParams(**{knob: value})
    SamplingParams(temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0)  # the edges that mean "off" are fine


def test_bad_values_through_train_py(workdir):
    """(needs train.py to call check_train_config) gradient_accumulation_steps=0 used to train nothing and say done."""
    for arg, message in (("--gradient_accumulation_steps=0", "gradient_accumulation_steps=0"),
                         ("--batch_size=0", "batch_size=0")):
        err = user_error(run_script("train.py", *FAST, "--out_dir=out/never", arg, cwd=workdir, check=False))
        assert message in err and "expected" in err
    assert not (workdir / "out/never").exists()


def test_sample_refuses_bad_sampling_values_before_loading(workdir):
    err = user_error(run_script("sample.py", "--out_dir", "out/none", "--top_k", "-5", cwd=workdir, check=False))
    assert "top_k=-5" in err and "0 (off) or more" in err


def test_a_full_disk_in_any_script_is_one_line(capsys):
    def main():
        raise OSError(errno.ENOSPC, "No space left on device", "out/x/log.jsonl")

    with pytest.raises(SystemExit) as e:
        run_main(main)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: out/x/log.jsonl:") and "No space left" in err and "\n" not in err


# ---- replies never show a role token ------------------------------------------------------------------------
def test_replies_end_at_any_role_token(trained, monkeypatch):
    import engine as engine_module
    eng = Engine.from_checkpoint(str(trained / "out/sft"), "cpu")
    tok = eng.tok
    for role in ("<|system|>", "<|user|>", "<|assistant|>"):
        script = tok.encode("郭靖") + [tok.special[role]] + tok.encode("黄蓉说")

        def scripted(logits, generated, p, generator, allowed=None):  # the model "says" the script
            return torch.full((logits.shape[0],), script[generated.shape[1]], dtype=torch.long)

        monkeypatch.setattr(engine_module, "sample_next", scripted)
        params = SamplingParams(max_new_tokens=len(script))
        assert eng.reply("郭靖是谁？", params) == "郭靖"
        assert eng.reply_batch(["郭靖是谁？", "杨过呢？"], params) == ["郭靖", "郭靖"]


# ---- saving: kills, full disks, file-size limits --------------------------------------------------------------
@pytest.fixture()
def checkpoint_copy(trained, tmp_path):
    """A run folder with latest/ (trainer state included) copied from the tiny pretraining run."""
    run = tmp_path / "run"
    shutil.copytree(trained / "out/pre/latest", run / "latest")
    return run


@pytest.mark.parametrize("failure", ["weights", "tokenizer", "between_renames"])
def test_a_failed_save_is_one_checkpoint_error_and_keeps_the_old_one(checkpoint_copy, monkeypatch, failure):
    import checkpoint as checkpoint_module
    from safetensors import SafetensorError
    run, before = checkpoint_copy, snapshot(checkpoint_copy / "latest")
    model, tok, info, _ = load_checkpoint(str(run), prefer=("latest",))
    state = load_trainer_state(str(run / "latest"))
    if failure == "weights":  # what safetensors raises on a full disk
        def no_room(*a, **k):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        monkeypatch.setattr(checkpoint_module, "save_model", no_room)
    elif failure == "tokenizer":
        def no_room(self, path):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(type(tok), "save", no_room)
    else:
        real_replace = os.replace

        def second_rename_fails(src, dst):  # latest -> latest.old worked, latest.tmp -> latest fails
            if str(src).endswith("latest.tmp"):
                raise OSError(errno.EIO, "Input/output error")
            real_replace(src, dst)
        monkeypatch.setattr(os, "replace", second_rename_fails)
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(str(run / "latest"), model, tok, {**info, "step": 99}, state)
    message = str(e.value)
    assert message.startswith(f"{run / 'latest'}: could not save") and "\n" not in message
    assert ("No space left" if failure != "between_renames" else "Input/output error") in message
    assert os.listdir(run) == ["latest"] and snapshot(run / "latest") == before


CHILD_SAVE = """
import resource, signal, sys
sys.path.insert(0, {repo!r})
from checkpoint import load_checkpoint, load_trainer_state, save_checkpoint
from errors import run_main

def main():
    model, tok, info, folder = load_checkpoint({run!r}, prefer=("latest",))
    state = load_trainer_state(folder)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # save_checkpoint itself must turn the signal into an error
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    save_checkpoint(folder, model, tok, {{**info, "step": 99}}, state)

run_main(main)
"""


def test_save_under_a_file_size_limit_prints_one_line_and_keeps_the_old_checkpoint(checkpoint_copy):
    run = checkpoint_copy
    before = snapshot(run / "latest")
    limit = len(before["model.safetensors"]) + 100_000  # the weights fit, the trainer state does not
    assert len(before["trainer_state.pt"]) > limit
    code = CHILD_SAVE.format(repo=REPO, run=str(run), limit=limit)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    err = user_error(proc)
    assert f"{run / 'latest'}: could not save" in err and "File too large" in err
    assert os.listdir(run) == ["latest"] and snapshot(run / "latest") == before


def test_training_under_a_file_size_limit_stops_in_one_line_and_keeps_the_checkpoint(trained):
    """(needs train.py to close its progress bar before the error, which must start a line of its own)"""
    run = trained / "out/faults_fsize"
    shutil.copytree(trained / "out/pre", run)
    before = snapshot(run / "latest")
    limit = 300_000  # room for the log and loss.png, not for model.safetensors

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(train_cmd(*PRE, "--out_dir=out/faults_fsize", "--init_from=resume", "--max_iters=62"),
                          cwd=trained, capture_output=True, text=True, timeout=300, preexec_fn=limited)
    err = user_error(proc)
    assert "out/faults_fsize/latest: could not save" in err and "File too large" in err
    assert snapshot(run / "latest") == before and leftovers(run) == []


@pytest.mark.parametrize("point", ["ckpt_after_weights", "ckpt_before_swap", "ckpt_between_renames"])
def test_kill_inside_a_checkpoint_write_then_resume(workdir, point):
    """Saves at step 0 are latest (1st) and best (2nd); the 3rd is latest at step 2, replacing a checkpoint."""
    out = f"out/faults_kill_{point}"
    run = workdir / out
    proc = subprocess.run(train_cmd(*FAST, f"--out_dir={out}", "--max_iters=4"), cwd=workdir, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "MINIGLM_FAULT": f"{point}:3"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    _, _, info, folder = load_checkpoint(str(run), prefer=("latest",))
    assert info["step"] == 0 and folder.endswith("latest.old" if point == "ckpt_between_renames" else "latest")
    run_script("train.py", *FAST, f"--out_dir={out}", "--max_iters=4", "--init_from=resume", cwd=workdir)
    _, _, info, folder = load_checkpoint(str(run), prefer=("latest",))
    assert info["step"] == 4 and folder.endswith("latest") and leftovers(run) == []
    # (needs train.py to truncate the log on resume) the steps killed after logging are not logged twice
    assert log_steps(run) == ([0, 2, 4], 0)


def test_kill_at_a_random_moment_then_resume(workdir):
    out, rng = "out/faults_kill_random", random.Random(13)
    run = workdir / out
    proc = subprocess.Popen(train_cmd(*FAST, f"--out_dir={out}", "--eval_interval=1", "--max_iters=100000"),
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "latest" / "config.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.1, 1.5))  # every step evaluates and saves: most of the time is in a save
    finally:
        proc.kill()
        proc.wait(timeout=30)
    _, _, info, _ = load_checkpoint(str(run), prefer=("latest",))
    steps, _ = log_steps(run)
    # a step's row is appended after its save, so a kill between the two leaves the log one evaluation behind
    assert (steps[-1] if steps else -1) in (info["step"] - 1, info["step"]), (steps[-3:], info["step"])
    final = info["step"] + 3
    run_script("train.py", *FAST, f"--out_dir={out}", "--eval_interval=1", f"--max_iters={final}",
               "--init_from=resume", cwd=workdir)
    assert load_checkpoint(str(run), prefer=("latest",))[2]["step"] == final
    # (needs train.py to truncate the log on resume) whole rows only, steps never repeat or go backwards
    assert log_steps(run) == (list(range(final + 1)), 0)


def test_killed_between_save_and_log_row_then_resume(workdir):
    """The window the random kill above may hit: the checkpoint of step 2 is saved, its log row is not."""
    out = "out/faults_kill_before_row"
    run = workdir / out
    run_script("train.py", *FAST, f"--out_dir={out}", "--eval_interval=1", "--max_iters=2", cwd=workdir)
    truncate_log(str(run), 2)  # as if killed after save(), before append_row()
    assert log_steps(run) == ([0, 1], 0) and load_checkpoint(str(run), prefer=("latest",))[2]["step"] == 2
    run_script("train.py", *FAST, f"--out_dir={out}", "--eval_interval=1", "--max_iters=4", "--init_from=resume",
               cwd=workdir)
    assert log_steps(run) == ([0, 1, 2, 3, 4], 0)


# ---- damaged checkpoints against every loader -----------------------------------------------------------------
def _edit_json(path, change):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    change(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def _nan_weights(folder):
    tensors = load_file(os.path.join(folder, "model.safetensors"))
    next(iter(tensors.values())).view(-1)[0] = float("nan")
    save_file(tensors, os.path.join(folder, "model.safetensors"))


def _cut(path, keep):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:int(len(data) * keep)])


DAMAGE = {
    "weights cut short": lambda d: _cut(os.path.join(d, "model.safetensors"), 0.6),
    "weights header edited": lambda d: open(os.path.join(d, "model.safetensors"), "r+b").write(b"\xff" * 8),
    "weights NaN": _nan_weights,
    "config not JSON": lambda d: open(os.path.join(d, "config.json"), "w").write('{"model": {'),
    "config a list": lambda d: open(os.path.join(d, "config.json"), "w").write("[1, 2]"),
    "config without model": lambda d: _edit_json(os.path.join(d, "config.json"), lambda c: c.pop("model")),
    "config wrong type": lambda d: _edit_json(os.path.join(d, "config.json"),
                                              lambda c: c["model"].update(n_layer="two")),
    "config wrong shape": lambda d: _edit_json(os.path.join(d, "config.json"),
                                               lambda c: c["model"].update(n_embd=32, mlp_hidden=0)),
    "config more layers": lambda d: _edit_json(os.path.join(d, "config.json"), lambda c: c["model"].update(n_layer=3)),
    "tokenizer cut short": lambda d: _cut(os.path.join(d, "tokenizer.json"), 0.5),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoints_are_one_line_checkpoint_errors(trained, tmp_path, damage):
    folder = tmp_path / "best"
    shutil.copytree(trained / "out/sft/best", folder)
    DAMAGE[damage](str(folder))
    for load in (load_checkpoint, Engine.from_checkpoint):
        with pytest.raises(CheckpointError) as e:
            load(str(folder))
        assert str(folder) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("damage", ["cut short", "a pickled object", "not a trainer state"])
def test_damaged_trainer_state_is_a_checkpoint_error(trained, tmp_path, damage):
    folder = tmp_path / "latest"
    shutil.copytree(trained / "out/pre/latest", folder)
    path = folder / "trainer_state.pt"
    if damage == "cut short":
        _cut(path, 0.5)
    elif damage == "a pickled object":
        torch.save({"step": 1, "optimizers": [], "rng": [], "evil": Engine}, path)  # refused by weights_only
    else:
        torch.save({"step": 1}, path)
    with pytest.raises(CheckpointError) as e:
        load_trainer_state(str(folder))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_scripts_report_a_damaged_checkpoint_in_one_line(trained):
    bad = trained / "faults_damaged"
    shutil.copytree(trained / "out/sft/best", bad / "best")
    DAMAGE["weights cut short"](str(bad / "best"))
    err = user_error(run_script("sample.py", "--out_dir", "faults_damaged", "--max_new_tokens", "5", cwd=trained,
                                check=False))
    assert "model.safetensors" in err and "faults_damaged" in err
    shutil.rmtree(bad / "best")
    shutil.copytree(trained / "out/sft/best", bad / "best")
    DAMAGE["config wrong shape"](str(bad / "best"))
    err = user_error(run_script("eval_rouge.py", "--out_dir", "faults_damaged", "--test", "test.jsonl", "--output",
                                "faults_eval", "--max_new_tokens", "5", cwd=trained, check=False))
    assert "faults_damaged" in err and "config.json" in err
    run = trained / "out/faults_bad_state"
    shutil.copytree(trained / "out/pre", run)
    _cut(run / "latest" / "trainer_state.pt", 0.5)
    err = user_error(run_script("train.py", *PRE, "--out_dir=out/faults_bad_state", "--init_from=resume",
                                "--max_iters=62", cwd=trained, check=False))
    assert "out/faults_bad_state/latest/trainer_state.pt: unreadable" in err


def test_serve_answers_a_damaged_checkpoint_with_an_error_not_a_traceback(trained, tmp_path):
    if not os.path.exists(os.path.join(REPO, "serve.py")):
        pytest.skip("no serve.py yet")
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from serve import build_app
    root = tmp_path / "out"
    shutil.copytree(trained / "out/sft/best", root / "damaged" / "best")
    DAMAGE["weights cut short"](str(root / "damaged" / "best"))
    client = TestClient(build_app(str(root), device="cpu"))
    r = client.post("/v1/chat/completions", json={"model": "damaged",
                                                  "messages": [{"role": "user", "content": "郭靖是谁？"}]})
    assert r.status_code >= 400 and "Traceback" not in r.text
    assert "model.safetensors" in r.json()["error"]["message"]


def test_train_refuses_a_tokenizer_that_train_bin_was_not_written_with(workdir, tmp_path):
    """(needs train.py to call check_pretrain_data) e.g. a prepare.py killed after swapping in its tokenizer."""
    from tokenizer import Tokenizer
    shutil.copytree(workdir / "data" / "tiny", tmp_path / "data" / "tiny")
    Tokenizer.train(["郭靖和黄蓉", "杨过和小龙女"] * 20, 300).save(tmp_path / "data" / "tiny" / "tokenizer.json")
    err = user_error(run_script("train.py", *FAST, "--max_iters=2", cwd=tmp_path, check=False))
    assert "tokenizer.json" in err and "prepare.py --dataset tiny again" in err


# ---- runs never destroy one another; torn logs ----------------------------------------------------------------
def test_a_new_run_never_destroys_an_earlier_one(trained):
    """(needs train.py's guard) refused without --overwrite=True; with it, a run that fails before its first save
    leaves the old run as it was (it used to delete log.jsonl at once)."""
    run = trained / "out/faults_guard"
    shutil.copytree(trained / "out/pre", run)
    before = snapshot(run)
    err = user_error(run_script("train.py", *PRE, "--out_dir=out/faults_guard", "--max_iters=2", cwd=trained,
                                check=False))
    assert "out/faults_guard already holds a run" in err and "--init_from=resume" in err and "--overwrite=True" in err
    assert snapshot(run) == before
    proc = run_script("train.py", *PRE, "--out_dir=out/faults_guard", "--max_iters=2", "--overwrite=True",
                      "--block_size=4096", cwd=trained, check=False)  # longer than the data: fails before saving
    assert "block_size" in user_error(proc)
    assert snapshot(run) == before


def test_a_torn_log_line_is_skipped_and_resume_repairs_it(trained):
    run = trained / "out/faults_torn"
    shutil.copytree(trained / "out/pre", run)
    with open(run / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 61, "train_loss": 2.')  # a crash while writing a row
    assert log_steps(run) == ([0, 30, 60], 1)
    proc = run_script("compare_runs.py", "out/faults_torn", "--output", "out/faults_torn.png", cwd=trained)
    assert "out/faults_torn: 60 steps" in proc.stdout and "skipped 1 unreadable line" in proc.stdout
    # (needs train.py to truncate the log on resume)
    run_script("train.py", *PRE, "--out_dir=out/faults_torn", "--init_from=resume", "--max_iters=62", cwd=trained)
    assert log_steps(run) == ([0, 30, 60, 62], 0)


def test_a_device_this_machine_lacks_is_one_line_in_every_script(trained, monkeypatch):
    """Not torch's traceback at the first tensor, and not a 500 on every request of a server that started fine."""
    from model import DeviceError, pick_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name, message in [("cuda", "sees no CUDA GPU"), ("cuda:0", "sees no CUDA GPU"), ("foo", "expected auto, cpu"),
                          ("", "expected auto, cpu")]:
        with pytest.raises(DeviceError, match=message):
            pick_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match="has 1 CUDA GPU"):
        pick_device("cuda:1")
    assert pick_device("cpu") == "cpu" and pick_device("cuda:0") == "cuda:0"
    monkeypatch.undo()
    bad = "foo"  # unknown everywhere, so the scripts below fail the same way on a GPU machine too
    assert "device='foo'" in user_error(run_script("sample.py", "--out_dir", "out/sft", "--device", bad,
                                                   "--start", "郭靖", cwd=trained, check=False))
    assert "device='foo'" in user_error(run_script("train.py", "--dataset=tiny", "--out_dir=out/dev", f"--device={bad}",
                                                   "--max_iters=2", *TINY_MODEL, cwd=trained, check=False))
    for script in ("serve.py", "app.py"):
        proc = run_script(script, "--device", bad, "--port", str(free_port()), cwd=trained, check=False, timeout=60)
        assert "device='foo'" in user_error(proc)


def test_servers_refuse_a_port_out_of_range_and_app_a_missing_checkpoint(trained):
    for script in ("serve.py", "app.py"):
        for port in ("99999", "-1"):
            assert "expected 1 to 65535" in user_error(run_script(script, "--port", port, cwd=trained, check=False))
    assert "out/nope: no checkpoint there" in user_error(run_script("app.py", "--out_dir", "out/nope", "--port",
                                                                    str(free_port()), cwd=trained, check=False))


def test_outputs_into_a_new_folder_are_made_and_a_file_in_the_way_is_found_first(trained, tmp_path):
    with atomic_write(tmp_path / "new" / "deeper" / "x.txt") as f:
        f.write("ok")
    assert (tmp_path / "new" / "deeper" / "x.txt").read_text() == "ok"
    write_jsonl(trained / "q.jsonl", [{"question": "郭靖的师父是谁？"}])
    run_script("sample.py", "--out_dir", "out/sft", "--input_data", "q.jsonl", "--output_data", "answers/new/o.jsonl",
               "--max_new_tokens", "4", cwd=trained)
    assert "answer" in json.loads((trained / "answers" / "new" / "o.jsonl").read_text(encoding="utf-8"))
    (trained / "a_file").write_text("mine", encoding="utf-8")
    proc = run_script("eval_rouge.py", "--out_dir", "out/sft", "--test", "test.jsonl", "--output", "a_file",
                      cwd=trained, check=False)
    assert "a file is there" in user_error(proc) and "evaluating" not in proc.stdout
    assert (trained / "a_file").read_text(encoding="utf-8") == "mine"
    proc = run_script("eval_rouge.py", "--out_dir", "out/sft", "--test", "test.jsonl", "--limit", "-1",
                      "--output", "out/neg", cwd=trained, check=False)
    assert "--limit -1" in user_error(proc)


def test_prepare_writes_only_into_one_folder_under_data_and_checks_the_vocabulary_first(workdir, tmp_path):
    (tmp_path / "book.txt").write_text(corpus_text(), encoding="utf-8")
    for name in ("", "..", "../escape", "a/b"):
        for script, extra in (("prepare.py", ["--input", str(tmp_path / "book.txt")]), ("prepare_sft.py", [])):
            assert "--dataset" in user_error(run_script(script, "--dataset", name, *extra, cwd=tmp_path,
                                                        check=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.txt"]  # nothing written anywhere
    proc = run_script("prepare.py", "--dataset", "big", "--input", str(tmp_path / "book.txt"), "--vocab_size",
                      "70000", cwd=tmp_path, check=False)
    assert "vocab_size 70000" in user_error(proc) and "training a" not in proc.stdout
