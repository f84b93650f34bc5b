"""Fixtures: tiny data the tests write themselves, and tiny checkpoints trained once per session.

Scripts run as a user runs them, as __main__ with their arguments, in a temporary working directory (in the test's
own process unless a test needs another: see run_script); nothing touches the repository's data/ or out/.
"""
import contextlib
import faulthandler
import io
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import traceback

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# Under pytest-xdist (-n auto) each worker takes its share of the cores for the torch work it does in-process, so
# that the workers do not fight over them; the scripts the tests start pick their own threads.
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if XDIST_WORKERS > 1:
    import torch
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // XDIST_WORKERS))

PEOPLE = [("郭靖", "射雕英雄传", "江南七怪和洪七公", "降龙十八掌", "黄蓉"),
          ("杨过", "神雕侠侣", "小龙女", "黯然销魂掌", "小龙女"),
          ("段誉", "天龙八部", "无量山的玉像", "六脉神剑", "王语嫣"),
          ("萧峰", "天龙八部", "少林寺的玄苦大师和丐帮帮主汪剑通", "降龙十八掌", "阿朱"),
          ("黄蓉", "射雕英雄传", "她的父亲黄药师和洪七公", "打狗棒法", "郭靖"),
          ("小龙女", "神雕侠侣", "她的师父和孙婆婆", "玉女素心剑法", "杨过")]


def corpus_text(repeat=6):
    paras = []
    for name, book, teacher, skill, partner in PEOPLE:
        paras.append(f"【{name}】\n{name}是《{book}》中的人物，师从{teacher}，最擅长{skill}。{name}与{partner}"
                     f"相知相守，一同行走江湖，留下许多故事。江湖中人提起{name}，无不称赞其侠义心肠。")
    return "\n\n".join(paras * repeat) + "\n"


def qa_records():
    recs = []
    for name, book, teacher, skill, partner in PEOPLE:
        recs.append({"question": f"{name}是谁？", "answer": f"{name}是《{book}》中的人物，最擅长{skill}。"})
        recs.append({"question": f"{name}的师父是谁？", "answer": f"{name}的师父是{teacher}。"})
        recs.append({"question": f"{name}和谁在一起？", "answer": f"{name}与{partner}相知相守。"})
    recs.append({"messages": [{"role": "user", "content": "介绍一下郭靖"},
                              {"role": "assistant", "content": "郭靖是《射雕英雄传》的主角。"},
                              {"role": "user", "content": "那他的师父是谁？"},
                              {"role": "assistant", "content": "郭靖的师父是江南七怪和洪七公。"}]})
    return recs


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def run_script(script, *args, cwd, env=None, timeout=300, check=True):
    """Run one of the project's scripts as a user would (as __main__, with these arguments, in cwd); returns a
    CompletedProcess. In this process unless it needs its own (an environment to set): starting Python and
    importing torch again costs about 3 s a script on a laptop CPU, most of the suite's time when each ran apart."""
    if env:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
    else:
        proc = run_in_this_process(script, args, cwd, timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_in_this_process(script, args, cwd, timeout):
    """`python script args` in cwd, run here: argv, sys.path[0], the working directory, stdout and stderr are the
    script's while it runs, and the exit status is its SystemExit's (1 and the traceback for an uncaught error).
    What a script changes for the rest of the process (signal handlers, environment, torch's threads) is put back.
    A script still running after `timeout` seconds ends this process with every thread's traceback, as a hung
    subprocess would have been killed: CI must not wait for its own time limit."""
    path = os.path.join(REPO, script)
    saved = dict(argv=sys.argv, path=list(sys.path), cwd=os.getcwd(), environ=dict(os.environ),
                 signals={s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGXFSZ)},
                 threads=sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None)
    out, err = io.StringIO(), io.StringIO()
    try:
        sys.argv, sys.path[:0] = [path, *args], [os.path.dirname(path)]
        os.chdir(cwd)
        faulthandler.dump_traceback_later(timeout, exit=True, file=sys.__stderr__)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(path, run_name="__main__")
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        faulthandler.cancel_dump_traceback_later()
        sys.argv, sys.path[:] = saved["argv"], saved["path"]
        os.chdir(saved["cwd"])
        os.environ.clear()
        os.environ.update(saved["environ"])
        for s, handler in saved["signals"].items():
            signal.signal(s, handler)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(saved["threads"] or max(1, (os.cpu_count() or 1) // XDIST_WORKERS))
    return subprocess.CompletedProcess([sys.executable, path, *args], code, out.getvalue(), err.getvalue())


TINY_MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=128", "--batch_size=8",
              "--eval_iters=2", "--dropout=0.0", "--compile=False", "--dtype=float32", "--threads=1"]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """A working directory with data/tiny prepared (corpus + SFT) from the test's own text."""
    wd = tmp_path_factory.mktemp("work")
    corpus = wd / "data" / "tiny" / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "a.txt").write_text(corpus_text(), encoding="utf-8")
    (corpus / "b.txt").write_text(corpus_text(4), encoding="utf-8")
    write_jsonl(wd / "data" / "tiny" / "sft.jsonl", qa_records() * 1)
    write_jsonl(wd / "test.jsonl", [{"question": "郭靖的师父是哪位？", "answer": "郭靖的师父是江南七怪和洪七公。",
                                     "group": "seen"},
                                    {"question": "段誉会什么武功？", "answer": "段誉最擅长六脉神剑。",
                                     "group": "corpus_only"}])
    run_script("prepare.py", "--dataset", "tiny", "--vocab_size", "600", "--val_fraction", "0.2", cwd=wd)
    run_script("prepare_sft.py", "--dataset", "tiny", "--val_fraction", "0.2", cwd=wd)
    return wd


@pytest.fixture(scope="session")
def trained(workdir):
    """Tiny pretraining and SFT checkpoints: out/pre and out/sft under workdir."""
    run_script("train.py", "--dataset=tiny", "--out_dir=out/pre", "--max_iters=60", "--eval_interval=30",
               "--learning_rate=3e-3", "--warmup_iters=5", *TINY_MODEL, cwd=workdir)
    run_script("train.py", "--task=sft", "--dataset=tiny", "--out_dir=out/sft", "--init_from=out/pre",
               "--max_iters=60", "--eval_interval=30", "--learning_rate=3e-3", "--warmup_iters=5", *TINY_MODEL,
               "--attn_dropout=0.1", cwd=workdir)
    return workdir


def free_port():
    """A port nothing listens on now, for a server under test (workers of -n auto each ask their own)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_error(proc):
    """The one 'error: ...' line a script prints for bad input (progress bars may share stderr)."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]
