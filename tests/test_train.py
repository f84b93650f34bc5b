"""train.py: configuration, resume, DDP on CPU, signals and checkpoints."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from batches import build_batches
from checkpoint import find_checkpoint, load_checkpoint
from conftest import REPO, TINY_MODEL, run_script, user_error

RUN = ["--dataset=tiny", "--eval_interval=5", "--warmup_iters=2", "--lr_decay_iters=12", "--dropout=0.1",
       "--learning_rate=3e-3", *[a for a in TINY_MODEL if not a.startswith("--dropout")]]


def weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def test_config_file_spellings_and_errors(workdir):
    for arg, message in [("--bogus=3", "unknown key 'bogus'"), ("--batch_size=big", "batch_size='big'"),
                         ("config/nothing.py", "not found"), ("--task=rl", "task='rl'")]:
        err = user_error(run_script("train.py", "--dataset=tiny", arg, cwd=workdir, check=False))
        assert message in err
    assert "Valid keys:" in user_error(run_script("train.py", "--bogus=3", cwd=workdir, check=False))
    # config/NAME.py resolves to configs/NAME.py, from any working directory
    proc = run_script("train.py", "config/pretrain.py", "--profile=tiny", "--dataset=tiny", "--out_dir=out/cfg",
                      "--max_iters=2", cwd=workdir)
    assert "profile tiny" in proc.stderr + proc.stdout
    info = json.loads((workdir / "out/cfg/latest/config.json").read_text(encoding="utf-8"))
    assert info["train_config"]["n_layer"] == 2 and info["step"] == 2


def test_novels_config_pretrains_on_per_character_tokens_without_qa(workdir):
    """The recipe for a user's own novels: prepare.py --tokenizer chars, then config/novels.py (no Q&A mixed in,
    so the dataset needs no SFT files)."""
    run_script("prepare.py", "--dataset", "mybooks", "--input", "data/tiny/corpus", "--tokenizer", "chars",
               "--vocab_size", "600", "--val_fraction", "0.2", cwd=workdir)
    meta = json.loads((workdir / "data/mybooks/meta.json").read_text(encoding="utf-8"))
    assert meta["tokenizer"]["name"].startswith("chars") and meta["splits"]["train"]["chars_per_token"] < 1.1
    run_script("train.py", "config/novels.py", "--profile=tiny", "--dataset=mybooks", "--max_iters=2", cwd=workdir)
    info = json.loads((workdir / "out/novels/latest/config.json").read_text(encoding="utf-8"))
    assert info["train_config"]["sft_mix"] == 0.0 and info["train_config"]["dataset"] == "mybooks"
    assert info["step"] == 2


def test_resume_reproduces_the_uninterrupted_run(workdir):
    run_script("train.py", *RUN, "--out_dir=out/full", "--max_iters=12", cwd=workdir)
    run_script("train.py", *RUN, "--out_dir=out/split", "--max_iters=5", cwd=workdir)
    run_script("train.py", *RUN, "--out_dir=out/split", "--max_iters=12", "--init_from=resume", cwd=workdir)
    a, b = weights(workdir / "out/full/latest"), weights(workdir / "out/split/latest")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    full = [json.loads(line) for line in open(workdir / "out/full/log.jsonl")]
    split = [json.loads(line) for line in open(workdir / "out/split/log.jsonl")]
    assert [r["step"] for r in split] == [0, 5, 10, 12] and full[-1]["val_loss"] == split[-1]["val_loss"]
    # stopped between evaluations (Ctrl-C, or a shorter --max_iters): the resumed run logs that step again
    run_script("train.py", *RUN, "--out_dir=out/split7", "--max_iters=7", cwd=workdir)
    run_script("train.py", *RUN, "--out_dir=out/split7", "--max_iters=12", "--init_from=resume", cwd=workdir)
    split7 = [json.loads(line) for line in open(workdir / "out/split7/log.jsonl")]
    assert [r["step"] for r in split7] == [0, 5, 7, 10, 12]
    assert all(torch.equal(a[k], v) for k, v in weights(workdir / "out/split7/latest").items())
    assert (workdir / "out/full/loss.png").stat().st_size > 1000


def test_a_run_from_a_checkpoint_records_the_shape_it_trained(trained):
    """SFT follows the starting checkpoint's shape, whatever the config file says; config.json must say so too."""
    run_script("train.py", "--task=sft", "--dataset=tiny", "--out_dir=out/shape", "--init_from=out/pre",
               "--max_iters=1", *TINY_MODEL, "--n_layer=7", "--n_embd=96", cwd=trained)
    info = json.loads((trained / "out/shape/latest/config.json").read_text(encoding="utf-8"))
    for key in ("n_layer", "n_embd", "n_head"):
        assert info["train_config"][key] == info["model"][key], key


def test_frozen_embeddings_stay_as_the_starting_model_has_them(trained):
    """--freeze_embeddings=True: the token embedding (tied: the output layer too) is the starting checkpoint's to
    the bit, and the blocks still learn."""
    run_script("train.py", "--task=sft", "--dataset=tiny", "--out_dir=out/frozen", "--init_from=out/pre",
               "--max_iters=3", "--freeze_embeddings=True", *TINY_MODEL, cwd=trained)
    start, tuned = weights(trained / "out/pre/latest"), weights(trained / "out/frozen/latest")
    frozen = [n for n in start if "embed" in n]
    assert frozen and all(torch.equal(start[n], tuned[n]) for n in frozen)
    assert any(not torch.equal(start[n], tuned[n]) for n in start if n.startswith("blocks."))
    # other parameter groups than the saved optimizer state's: one line, not a traceback
    for changed in ("--freeze_embeddings=False", "--optimizer=muon"):
        err = user_error(run_script("train.py", "--task=sft", "--dataset=tiny", "--out_dir=out/frozen",
                                    "--init_from=resume", "--max_iters=5", changed, *TINY_MODEL, cwd=trained,
                                    check=False))
        assert "out/frozen/latest's optimizer state does not fit" in err and "freeze_embeddings" in err


def test_a_resume_keeps_the_task_and_dataset_of_its_run(trained):
    """The saved place in the data means nothing in other data: one line saying what to do instead."""
    shutil.copytree(trained / "data/tiny", trained / "data/tiny_copy", dirs_exist_ok=True)
    for changed, said in [("--task=sft", "task=pretrain"), ("--dataset=tiny_copy", "dataset=tiny")]:
        err = user_error(run_script("train.py", *RUN, "--out_dir=out/pre", "--init_from=resume", "--max_iters=30",
                                    changed, cwd=trained, check=False))  # the later --dataset wins
        assert f"out/pre/latest is a {said} run: resume it with --{said}" in err


def test_sft_loss_only_on_answers_and_best_checkpoint(trained):
    info = json.loads((trained / "out/sft/best/config.json").read_text(encoding="utf-8"))
    assert info["task"] == "sft" and info["best_val_loss"] < 10
    pretrained = json.loads((trained / "out/pre/latest/config.json").read_text(encoding="utf-8"))
    assert pretrained["model"]["attn_dropout"] == 0.0 and info["model"]["attn_dropout"] == 0.1  # SFT's own rate
    rows = [json.loads(line) for line in open(trained / "out/sft/log.jsonl")]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert all(k in rows[0] for k in ("val_bpc", "lr", "tokens_per_sec", "chars_per_sec"))


def test_checkpoint_loads_without_unpickling(trained, monkeypatch):
    folder = find_checkpoint(str(trained / "out/sft"))
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors", "tokenizer.json"]
    real_load = torch.load
    calls = []

    def guarded(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", guarded)
    load_checkpoint(folder)
    assert calls == []  # safetensors and JSON only
    state = torch.load(trained / "out/sft/latest/trainer_state.pt", weights_only=True)
    assert state["step"] == 60 and "optimizers" in state


def test_interrupted_checkpoint_swap_falls_back_to_the_old_folder(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained / "out/pre/best", run / "best.old")  # killed between the two renames
    assert find_checkpoint(str(run)).endswith("best.old")
    model, tok, info, _ = load_checkpoint(str(run))
    assert info["task"] == "pretrain"


def test_sigterm_saves_and_exits_cleanly(workdir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), *RUN, "--out_dir=out/sig",
                             "--max_iters=100000", "--eval_interval=1000"], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = workdir / "out/sig/log.jsonl"
    deadline = time.time() + 60
    while not log.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped by signal" in out
    info = json.loads((workdir / "out/sig/latest/config.json").read_text(encoding="utf-8"))
    assert info["step"] > 0
    run_script("train.py", *RUN, "--out_dir=out/sig", f"--max_iters={info['step'] + 2}", "--init_from=resume",
               cwd=workdir)


def test_two_process_torchrun_on_cpu_trains_and_ranks_agree(workdir):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(torchrun + [os.path.join(REPO, "train.py"), *RUN, "--out_dir=out/ddp", "--max_iters=6",
                                      "--gradient_accumulation_steps=2", "--threads=1", "--eval_interval=3",
                                      "--sft_mix=0.5", "--dtype=auto"],  # auto: the ranks agree on a dtype
                          cwd=workdir, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 process(es)" in proc.stdout + proc.stderr
    assert json.loads((workdir / "out/ddp/latest/config.json").read_text())["dtype"] in ("float32", "bfloat16")
    rows = [json.loads(line) for line in open(workdir / "out/ddp/log.jsonl")]
    assert [r["step"] for r in rows] == [0, 3, 6]  # only rank 0 logs
    state = torch.load(workdir / "out/ddp/latest/trainer_state.pt", weights_only=True)
    assert len(state["rng"]) == 2  # both ranks' sampler states are kept for resume
    ranks = [r["batches"] for r in state["rng"]]  # ranks drew different windows and different Q&A examples
    assert not torch.equal(ranks[0]["generator"], ranks[1]["generator"])
    assert ranks[0]["packer"]["waiting"] != ranks[1]["packer"]["waiting"]


def test_compare_runs_overlays_curves(workdir):
    run_script("train.py", *RUN, "--out_dir=out/cmp_a", "--max_iters=5", cwd=workdir)
    run_script("train.py", *RUN, "--out_dir=out/cmp_b", "--max_iters=5", "--optimizer=muon", cwd=workdir)
    proc = run_script("compare_runs.py", "out/cmp_a", "out/cmp_b", "--output", "out/cmp.png", cwd=workdir)
    assert (workdir / "out/cmp.png").stat().st_size > 1000 and "out/cmp_b: 5 steps" in proc.stdout
    assert "no log.jsonl" in user_error(run_script("compare_runs.py", "out/nothing", cwd=workdir, check=False))


def test_max_seconds_budget_stops_training_and_saves(workdir):
    proc = run_script("train.py", *RUN, "--out_dir=out/budget", "--max_iters=1000000", "--max_seconds=3",
                      "--eval_interval=1000000", cwd=workdir)
    rows = [json.loads(line) for line in open(workdir / "out/budget/log.jsonl")]
    assert rows[-1]["time"] >= 3 and rows[-1]["step"] > 0 and "done:" in proc.stderr + proc.stdout
    info = json.loads((workdir / "out/budget/latest/config.json").read_text(encoding="utf-8"))
    assert info["step"] == rows[-1]["step"]
    # the learning rate has decayed to min_lr by the end, whichever budget ended the run
    assert abs(rows[-1]["lr"] - 1e-4) < 1e-9


def test_iterations_ending_before_the_time_cap_still_finish_the_schedule(workdir):
    run_script("train.py", *RUN, "--out_dir=out/cap", "--max_iters=6", "--lr_decay_iters=0", "--max_seconds=1000",
               "--min_lr=1e-4", cwd=workdir)
    rows = [json.loads(line) for line in open(workdir / "out/cap/log.jsonl")]
    assert rows[-1]["step"] == 6 and abs(rows[-1]["lr"] - 1e-4) < 1e-9


def test_pretraining_with_qa_rows_mixed_in(workdir):
    run_script("train.py", *RUN, "--out_dir=out/mix", "--max_iters=3", "--sft_mix=0.25", cwd=workdir)
    info = json.loads((workdir / "out/mix/latest/config.json").read_text(encoding="utf-8"))
    assert info["train_config"]["sft_mix"] == 0.25 and info["step"] == 3
    assert "sft_mix=1.5" in user_error(run_script("train.py", *RUN, "--sft_mix=1.5", cwd=workdir, check=False))
    # a run trained without Q&A rows, resumed with them: the rows start their own epoch order (was a TypeError)
    run_script("train.py", *RUN, "--out_dir=out/mix0", "--max_iters=2", "--sft_mix=0", cwd=workdir)
    run_script("train.py", *RUN, "--out_dir=out/mix0", "--max_iters=4", "--sft_mix=0.25", "--init_from=resume",
               cwd=workdir)
    info = json.loads((workdir / "out/mix0/latest/config.json").read_text(encoding="utf-8"))
    assert info["train_config"]["sft_mix"] == 0.25 and info["step"] == 4


def test_schedule_scales_every_group_from_its_own_peak_after_warmup():
    import train
    cfg = {"warmup_iters": 10, "learning_rate": 1e-3, "min_lr": 1e-4}
    assert train.lr_multiplier(cfg, 0, -1.0) < train.lr_multiplier(cfg, 9, -0.1) < 1.0  # warmup rises
    assert train.lr_multiplier(cfg, 10, 0.0) == 1.0  # the cosine starts at the peak when warmup ends
    assert train.lr_multiplier(cfg, 99, 1.0) == 0.1  # and ends at min_lr / learning_rate


def test_muon_keeps_its_own_learning_rate(workdir):
    run_script("train.py", *RUN, "--out_dir=out/muon_lr", "--max_iters=6", "--optimizer=muon", "--muon_lr=0.05",
               cwd=workdir)
    state = torch.load(workdir / "out/muon_lr/latest/trainer_state.pt", weights_only=True)
    adamw, muon = (opt["param_groups"][0]["lr"] for opt in state["optimizers"])
    assert muon / adamw == pytest.approx(0.05 / 3e-3, rel=1e-6)  # one multiplier for both peaks: 3e-3 and 0.05
    assert adamw < 3e-3  # and the cosine has brought them down


def test_a_run_that_does_not_learn_says_so(workdir):
    """All-zero gradients (a compiler bug on one GPU) trained nothing without an error; train.py must warn once the
    loss has not fallen by the end of warmup, and stay quiet on a run that learns."""
    stuck = run_script("train.py", *RUN, "--out_dir=out/stuck", "--max_iters=10", "--learning_rate=1e-9",
                       "--min_lr=0", cwd=workdir)
    assert (stuck.stdout + stuck.stderr).count("warning: the training loss has not fallen in 5 steps") == 1
    learning = run_script("train.py", *RUN, "--out_dir=out/learning", "--max_iters=10", cwd=workdir)
    assert "has not fallen" not in learning.stdout + learning.stderr
    # fine-tuning's loss may rise before it falls (SFT on the default data: 3.65 at step 0, 3.93 at step 100)
    tuned = run_script("train.py", *RUN, "--out_dir=out/tuned", "--max_iters=10", "--learning_rate=1e-9",
                       "--min_lr=0", "--init_from=out/learning", cwd=workdir)
    assert "has not fallen" not in tuned.stdout + tuned.stderr


def test_a_budget_in_epochs_follows_the_data(workdir):
    proc = run_script("train.py", *RUN, "--out_dir=out/epochs", "--max_iters=0", "--epochs=3", cwd=workdir)
    meta = json.loads((workdir / "data/tiny/meta.json").read_text(encoding="utf-8"))
    steps = -(-3 * meta["splits"]["train"]["tokens"] // (8 * 128))  # batch 8 x block 128 from TINY_MODEL
    assert f"| {steps} steps, " in proc.stderr + proc.stdout
    assert json.loads((workdir / "out/epochs/latest/config.json").read_text(encoding="utf-8"))["step"] == steps
    import train  # no budget at all: passes sized to the data, fewer for more of it
    assert train.auto_epochs(10_000) == 40 and train.auto_epochs(2_000_000) < 6 < train.auto_epochs(1_000_000)


@pytest.mark.parametrize("speedup, chosen", [(0.6, "float32"), (1.1, "float32"), (2.0, "bfloat16"),
                                               (None, "float32")])
def test_auto_dtype_on_the_cpu_takes_bf16_only_where_it_timed_clearly_faster(speedup, chosen, monkeypatch):
    import compute
    monkeypatch.setattr(compute, "cpu_bf16_speedup", lambda: speedup)
    threads = torch.get_num_threads()  # setup_system sets it: keep this process's
    system = compute.setup_system({"device": "cpu", "threads": threads, "dtype": "auto"})
    assert (system["dtype"], system["bf16_speedup"]) == (chosen, speedup)
    assert compute.setup_system({"device": "cpu", "threads": threads, "dtype": "bfloat16"})["dtype"] == "bfloat16"


@pytest.mark.parametrize("optimizer, device_type, speedup, noted", [
    ("muon", "cpu", None, True), ("muon", "cpu", 0.6, True), ("muon", "cpu", 2.0, False),
    ("adamw", "cpu", None, False), ("muon", "cuda", None, False)])
def test_muon_on_a_cpu_without_fast_bf16_warns_that_its_steps_are_slow(optimizer, device_type, speedup, noted,
                                                                       monkeypatch):
    import compute
    monkeypatch.setattr(compute, "cpu_bf16_speedup", lambda: speedup)
    for dtype in ("auto", "float32"):  # auto has timed bf16 already; an explicit dtype times it for the note
        system = {"device_type": device_type, "bf16_speedup": speedup if dtype == "auto" else None}
        note = compute.muon_speed_note({"optimizer": optimizer, "dtype": dtype}, system)
        assert (note is not None) == noted
        assert note is None or "bfloat16" in note and "AdamW" in note


def test_train_and_val_losses_are_measured_alike(workdir, monkeypatch):
    """With Q&A mixed into pretraining, the logged train loss is still on corpus windows, like val."""
    import train
    from tokenizer import Tokenizer
    monkeypatch.chdir(workdir)
    cfg = {**train.DEFAULTS, "dataset": "tiny", "block_size": 64, "batch_size": 4, "sft_mix": 0.5, "eval_iters": 2}
    tok = Tokenizer.load("data/tiny/tokenizer.json")
    batches, evals, *_ = build_batches(cfg, tok, "data/tiny", 0, 1)
    assert set(batches.next()) == {"x", "y", "w", "doc"}  # training rows: half of them packed Q&A
    assert all(set(b) == {"x", "y"} for split in ("train", "val") for b in evals[split])


def test_pretraining_qa_rows_leave_out_the_extra_wordings(workdir, monkeypatch):
    """Pretraining's Q&A rows draw the SFT set's own training records, which prepare_sft.py writes first, and not
    the copies and extra wordings after them, unless sft_mix_extra asks for those too."""
    import numpy as np
    import train
    from batches import SFTData
    from tokenizer import Tokenizer
    monkeypatch.chdir(workdir)
    shutil.copytree("data/tiny", "data/tiny_extra", dirs_exist_ok=True)
    meta_path = workdir / "data/tiny_extra/sft_meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    n_all = meta["splits"]["train"]["examples"]
    assert meta["source_examples"] == n_all  # no extra files: every training record is the source's
    meta["source_examples"] = 3  # as if the rest were extra wordings
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    tok = Tokenizer.load("data/tiny_extra/tokenizer.json")
    cfg = {**train.DEFAULTS, "dataset": "tiny_extra", "block_size": 64, "batch_size": 4, "sft_mix": 0.5,
           "eval_iters": 2}
    qa = build_batches(cfg, tok, "data/tiny_extra", 0, 1)[0].packer.data
    full = SFTData("data/tiny_extra", "train")
    assert len(qa) == 3 < n_all and all(np.array_equal(qa.example(i)[0], full.example(i)[0]) for i in range(3))
    qa = build_batches({**cfg, "sft_mix_extra": True}, tok, "data/tiny_extra", 0, 1)[0].packer.data
    assert len(qa) == n_all


def test_reply_start_weights_reach_sft_training_batches_only(workdir, monkeypatch):
    """reply_start_tokens/weight: SFT's training rows weigh each reply's first tokens more; its evaluation rows and
    pretraining's Q&A rows keep every reply token at 1, so their losses compare with runs without the knob."""
    import train
    from tokenizer import Tokenizer
    monkeypatch.chdir(workdir)
    tok = Tokenizer.load("data/tiny/tokenizer.json")
    knob = {"reply_start_tokens": 2, "reply_start_weight": 3.0, "block_size": 64, "batch_size": 4, "eval_iters": 2}
    batches, evals, *_ = build_batches({**train.DEFAULTS, **knob, "task": "sft", "dataset": "tiny"}, tok,
                                       "data/tiny", 0, 1)
    w = batches.next()["w"]
    assert set(w.unique().tolist()) == {0.0, 1.0, 3.0}
    assert all(set(e["w"].unique().tolist()) <= {0.0, 1.0} for split in evals.values() for e in split)
    pre, *_ = build_batches({**train.DEFAULTS, **knob, "dataset": "tiny", "sft_mix": 0.5}, tok, "data/tiny", 0, 1)
    assert set(pre.next()["w"].unique().tolist()) <= {0.0, 1.0}


def test_sft_evaluation_reads_the_same_examples_under_any_number_of_processes(workdir, monkeypatch):
    """Each process trains on its own share of an epoch, but rank 0's validation loss (which picks best/) must be
    the one-process figure: the same fixed batches whatever the world size, not a duplicated part of the split."""
    import train
    from tokenizer import Tokenizer
    monkeypatch.chdir(workdir)
    tok = Tokenizer.load("data/tiny/tokenizer.json")
    cfg = {**train.DEFAULTS, "task": "sft", "dataset": "tiny", "block_size": 64, "batch_size": 2, "eval_iters": 50}
    one = build_batches(cfg, tok, "data/tiny", 0, 1)
    for rank in (0, 1):
        two = build_batches(cfg, tok, "data/tiny", rank, 2)
        for split in ("train", "val"):
            assert len(two[1][split]) == len(one[1][split])
            assert all(torch.equal(a["x"], b["x"]) for a, b in zip(one[1][split], two[1][split]))
    assert not torch.equal(build_batches(cfg, tok, "data/tiny", 1, 2)[0].next()["x"], one[0].next()["x"])


def test_sft_replays_corpus_windows_beside_the_examples(workdir, monkeypatch):
    """text_mix: that share of each SFT batch's rows are corpus windows, every token weighed and plain causal; the
    rest are packed examples, and the epochs count examples only."""
    import numpy as np
    import train
    from batches import open_tokens
    from configurator import ConfigError
    from tokenizer import Tokenizer
    monkeypatch.chdir(workdir)
    tok = Tokenizer.load("data/tiny/tokenizer.json")
    cfg = {**train.DEFAULTS, "task": "sft", "dataset": "tiny", "block_size": 64, "batch_size": 4, "text_mix": 0.25,
           "eval_iters": 2}
    batches, evals, _, per_epoch, per_step = build_batches(cfg, tok, "data/tiny", 0, 1)
    b = batches.next()
    corpus = open_tokens("data/tiny/train.bin").astype(np.int64)
    window = b["x"][0].numpy()
    assert any(np.array_equal(corpus[i:i + 64], window) for i in range(len(corpus) - 64))  # row 0: the corpus
    assert bool((b["w"][0] == 1).all()) and bool((b["doc"][0] == 0).all())
    assert bool((b["w"][1:] == 0).any()) and int(b["doc"][1:].max()) > 0  # rows 1-3: examples, prompts weigh 0
    assert per_step == 3 * 65
    assert all(bool((e["w"] == 0).any()) for e in evals["val"])  # evaluation stays on the examples
    with pytest.raises(ConfigError, match="text_mix=1.0 leaves no row"):
        build_batches({**cfg, "text_mix": 1.0}, tok, "data/tiny", 0, 1)


def test_sft_warns_when_best_is_the_starting_model(trained):
    """An SFT run whose validation loss never falls below step 0's leaves best/ = the untuned model, which the
    scripts would then serve; the run says so and names latest/ (a learning rate far too high forces it)."""
    args = ["--task=sft", "--dataset=tiny", "--init_from=out/pre", "--max_iters=4", "--eval_interval=2",
            "--warmup_iters=0", *TINY_MODEL]
    diverged = run_script("train.py", *args, "--out_dir=out/sft_diverged", "--learning_rate=3.0", cwd=trained)
    assert json.loads((trained / "out/sft_diverged/best/config.json").read_text(encoding="utf-8"))["step"] == 0
    assert "out/sft_diverged/latest" in diverged.stdout.split("warning: validation loss never fell")[1]
    tuned = run_script("train.py", *args, "--out_dir=out/sft_tuned", "--learning_rate=3e-3", cwd=trained)
    assert "warning: validation loss" not in tuned.stdout + tuned.stderr


def test_an_overflow_under_float16_loss_scaling_skips_every_optimizer():
    """Muon for the block matrices beside AdamW for the rest, float16 loss scaling, a clipped norm over all
    parameters: an inf in Muon's gradients must not step AdamW on gradients the clip made zero (or NaN)."""
    from train import optimizer_step
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(4, 4))
    adamw, muon = torch.optim.AdamW([a], lr=0.1), torch.optim.Muon([b], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    for bad in (float("inf"), float("nan")):
        scaler.scale((a.sum() + b.sum()) * 1.0).backward()
        b.grad[0, 0] = bad
        before = a.detach().clone(), b.detach().clone(), scaler.get_scale()
        optimizer_step([adamw, muon], scaler, [a, b], grad_clip=1.0)
        assert torch.equal(a, before[0]) and torch.equal(b, before[1])  # neither stepped
        assert scaler.get_scale() == before[2] / 2 and a.grad is None and b.grad is None
    scaler.scale((a.sum() + b.sum()) * 1.0).backward()
    optimizer_step([adamw, muon], scaler, [a, b], grad_clip=1.0)
    assert not torch.equal(a, torch.ones(3)) and not torch.equal(b, torch.ones(4, 4))  # a finite step moves both
    assert torch.isfinite(a).all() and torch.isfinite(b).all()


def test_float16_off_cuda_trains_with_loss_scaling(workdir):
    """float16 gradients underflow without loss scaling: the scaler runs wherever float16 does, not on CUDA only."""
    from compute import setup_system
    import train
    system = setup_system({**train.DEFAULTS, "device": "cpu", "dtype": "float16"})
    assert system["scaler"].is_enabled() and system["dtype"] == "float16"
    assert not setup_system({**train.DEFAULTS, "device": "cpu", "dtype": "float32"})["scaler"].is_enabled()
    args = [a for a in RUN if not a.startswith("--dtype")] + ["--dtype=float16"]
    run_script("train.py", *args, "--out_dir=out/f16", "--max_iters=4", cwd=workdir)
    rows = [json.loads(line) for line in open(workdir / "out/f16/log.jsonl")]
    assert rows[-1]["step"] == 4 and rows[-1]["train_loss"] < rows[0]["train_loss"]
