"""The training log, RUN_DIR/log.jsonl: one JSON object per evaluation, each with an integer "step".

A crash or a full disk can leave a torn last line, so readers skip (and count) lines that are not whole rows
instead of failing, and a resumed run first cuts the log back to the steps before the one it resumes from, so that
steps never repeat or go backwards.
"""
import json
import os

from fsutil import atomic_write

LOG_NAME = "log.jsonl"


def log_path(run_dir):
    return os.path.join(run_dir, LOG_NAME)


def append_row(run_dir, row):
    """Append one row (a dict with an integer 'step') as one JSON line, flushed and fsynced. A torn last line
    left by a crash gets its newline first, so the new row stays whole."""
    line = json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n"
    with open(log_path(run_dir), "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = b"\n" + line
        f.write(line)  # "a" mode: always at the end, wherever the read left the position
        f.flush()
        os.fsync(f.fileno())


def _parse(line):
    try:
        row = json.loads(line)
    except ValueError:  # torn or not JSON (also bad UTF-8)
        return None
    if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
        return row
    return None


def read_log(run_dir):
    """(rows, n_bad): the whole rows of RUN_DIR/log.jsonl in file order ([] if there is no log), and how many
    non-blank lines were skipped because they are torn, not JSON, or not an object with an integer step."""
    rows, bad = [], 0
    try:
        with open(log_path(run_dir), "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return [], 0
    for line in lines:
        if not line.strip():
            continue
        row = _parse(line)
        if row is None:
            bad += 1
        else:
            rows.append(row)
    return rows, bad


def truncate_log(run_dir, before_step):
    """Atomically rewrite RUN_DIR/log.jsonl keeping only the whole rows with step < before_step (a resumed run
    logs its own rows from before_step on). Returns (kept, removed), removed counting the bad lines too."""
    if not os.path.exists(log_path(run_dir)):
        return 0, 0
    rows, bad = read_log(run_dir)
    kept = [r for r in rows if r["step"] < before_step]
    with atomic_write(log_path(run_dir)) as f:
        for r in kept:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(kept), len(rows) - len(kept) + bad
