"""Overlay the loss curves of several runs in one figure (each run's log.jsonl), e.g. to compare settings.

    python compare_runs.py out/pretrain out/pretrain_muon --output out/compare.png
"""
import argparse
import os

from data_utils import DataError
from errors import run_main
from plotting import plot_runs
from runlog import read_log


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders written by train.py")
    ap.add_argument("--labels", nargs="+", help="legend names, one per run (default: folder names)")
    ap.add_argument("--output", default="out/compare.png")
    args = ap.parse_args()
    logs = []
    for run in args.runs:
        rows, n_bad = read_log(run)
        rows = [r for r in rows if isinstance(r.get("val_loss"), (int, float))]
        if not rows:
            raise DataError(f"{run}: no log.jsonl with evaluations (is it a train.py run folder?)")
        logs.append((run, rows, n_bad))
    if args.labels and len(args.labels) != len(args.runs):
        raise DataError(f"--labels: {len(args.labels)} names for {len(args.runs)} runs")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    plot_runs(args.runs, args.output, args.labels)
    for run, rows, n_bad in logs:
        last, best = rows[-1], min(rows, key=lambda r: r["val_loss"])
        bpc = f" ({best['val_bpc']:.3f} bits/char)" if isinstance(best.get("val_bpc"), (int, float)) else ""
        print(f"{run}: {last['step']} steps, last val {last['val_loss']:.4f}, best val {best['val_loss']:.4f}"
              f"{bpc} at step {best['step']}")
        if n_bad:
            print(f"{run}: skipped {n_bad} unreadable line{'s' if n_bad > 1 else ''} of log.jsonl "
                  "(torn by a crash or a full disk)")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_main(main)
