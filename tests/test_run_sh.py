"""run.sh end to end on the tiny profile, in a copy of the repository (the real data/ and out/ stay untouched)."""
import json
import os
import shutil
import subprocess

from conftest import REPO


def copy_repo(dest):
    def ignore(folder, names):
        skip = {".git", "out", "__pycache__", ".pytest_cache", ".gradio"}
        generated = (".bin", "meta.json", "tokenizer.json")
        return [n for n in names if n in skip or (folder.endswith(os.path.join("data", "jinyong"))
                                                    and n.endswith(generated))]
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def run_sh(cwd, *args, env=None):
    return subprocess.run(["bash", "run.sh", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def test_run_sh_tiny_profile_runs_every_stage_then_skips_them(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    proc = run_sh(repo, "--profile", "tiny")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("prepare", "prepare_sft", "pretrain", "sft", "eval", "report"):
        assert f"== {stage}: " in proc.stdout
    report = (repo / "out" / "REPORT.md").read_text(encoding="utf-8")
    for section in ("## Data and tokenizer", "## Model", "## Time per stage", "## Loss curves",
                    "## Evaluation", "corpus_only", "seen", "介绍一下《天龙八部》的主角"):
        assert section in report
    assert "python app.py" in proc.stdout.strip().splitlines()[-1]
    again = run_sh(repo, "--profile", "tiny")
    assert again.returncode == 0 and again.stdout.count("up to date") == 6
    # an out/ from before run_settings.txt is judged by the profile its pretraining recorded: nothing to redo
    (repo / "out" / "run_settings.txt").unlink()
    migrated = run_sh(repo, "--profile", "tiny")
    assert migrated.returncode == 0 and migrated.stdout.count("up to date") == 6, migrated.stdout[-2000:]
    # another time cap (or profile) trains again, though every output is newer than the input files
    capped = run_sh(repo, "--profile", "tiny", "--minutes", "1")
    assert capped.returncode == 0, capped.stdout[-3000:] + capped.stderr[-3000:]
    assert "out/ was trained with profile=tiny minutes=none, this run asks profile=tiny minutes=1" in capped.stdout
    assert capped.stdout.count("up to date") == 2  # prepare and prepare_sft only
    train_config = json.loads((repo / "out" / "pretrain" / "best" / "config.json").read_text())["train_config"]
    assert train_config["max_seconds"] == 24  # 40% of the minute; SFT gets the other 36 s
    assert "config/sft.py --overwrite=True --max_seconds=36" in capped.stdout
    report = (repo / "out" / "REPORT.md").read_text(encoding="utf-8")
    assert "training time capped at 24 s of pretraining, 36 s of SFT" in report
    uncapped = run_sh(repo, "--profile", "tiny")
    assert uncapped.stdout.count("up to date") == 2 and "minutes=1, this run asks" in uncapped.stdout
    assert "capped" not in (repo / "out" / "REPORT.md").read_text(encoding="utf-8")
    for bad in (["--minutes", "soon"], ["--minutes", "0"], ["--minutes"]):
        refused = run_sh(repo, "--profile", "tiny", *bad)
        assert refused.returncode == 2 and "--minutes" in refused.stderr and "== " not in refused.stdout
    refused = run_sh(repo, "--profile", "tyni")
    assert refused.returncode == 2 and "profile 'tyni': expected" in refused.stderr
    assert "Traceback" not in refused.stderr and "== " not in refused.stdout
    # MINIGLM_PROFILE, which train.py reads, picks run.sh's profile too: this is the tiny run above, up to date
    from_env = run_sh(repo, env={"MINIGLM_PROFILE": "tiny"})
    assert "run.sh: profile tiny" in from_env.stdout and from_env.stdout.count("up to date") == 6
    assert "## The course's four questions" in from_env.stdout  # the whole report, not its first lines
    (repo / "data" / "jinyong" / "test.jsonl").write_text('{"question": "broken"\n', encoding="utf-8")
    failed = run_sh(repo, "--profile", "tiny")
    assert failed.returncode != 0 and "stage 'eval' failed" in failed.stderr
    assert "== report" not in failed.stdout
    # the re-tellings are an input of the prepare stage: a changed rewrites/ folder prepares again (and here fails)
    (repo / "data" / "jinyong" / "rewrites" / "empty.txt").write_text("", encoding="utf-8")
    failed = run_sh(repo, "--profile", "tiny")
    assert failed.returncode != 0 and "stage 'prepare' failed" in failed.stderr
