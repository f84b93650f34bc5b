"""Overlay the loss curves of several runs in one figure (each run's log.jsonl), e.g. to compare settings.

    python compare_runs.py out/pretrain out/pretrain_muon --output out/compare.png
"""
import argparse
import os

from data_utils import DataError
from errors import run_main
from plotting import plot_runs, read_log


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders written by train.py")
    ap.add_argument("--labels", nargs="+", help="legend names, one per run (default: folder names)")
    ap.add_argument("--output", default="out/compare.png")
    args = ap.parse_args()
    for run in args.runs:
        if not read_log(run):
            raise DataError(f"{run}: no log.jsonl with evaluations (is it a train.py run folder?)")
    if args.labels and len(args.labels) != len(args.runs):
        raise DataError(f"--labels: {len(args.labels)} names for {len(args.runs)} runs")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    plot_runs(args.runs, args.output, args.labels)
    for run in args.runs:
        last = read_log(run)[-1]
        best = min(read_log(run), key=lambda r: r["val_loss"])
        print(f"{run}: {last['step']} steps, last val {last['val_loss']:.4f}, best val {best['val_loss']:.4f} "
              f"({best['val_bpc']:.3f} bits/char) at step {best['step']}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_main(main)
