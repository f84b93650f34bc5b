"""Figures: loss curves of one or several runs, and evaluation charts. Always the Agg backend (no display)."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fsutil import atomic_write  # noqa: E402
from runlog import read_log  # noqa: E402

# Chinese labels (questions in eval charts) need a CJK font when one is installed; fall back quietly otherwise.
plt.rcParams["font.sans-serif"] = ["Noto Sans CJK SC", "WenQuanYi Zen Hei", "SimHei", "DejaVu Sans"]
plt.rcParams["axes.unicode_minus"] = False


def _save(fig, path):
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_runs(run_dirs, out_png, labels=None):
    """Train and validation loss (and validation bits per character) against step, one colour per run."""
    fig, (ax_loss, ax_bpc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, run in enumerate(run_dirs):
        rows = [r for r in read_log(run)[0] if all(k in r for k in ("train_loss", "val_loss", "val_bpc"))]
        if not rows:
            continue
        label = labels[i] if labels else os.path.basename(os.path.normpath(run))
        color = f"C{i % 10}"
        steps = [r["step"] for r in rows]
        ax_loss.plot(steps, [r["train_loss"] for r in rows], color=color, linestyle="--", alpha=0.7,
                     label=f"{label} train")
        ax_loss.plot(steps, [r["val_loss"] for r in rows], color=color, label=f"{label} val")
        ax_bpc.plot(steps, [r["val_bpc"] for r in rows], color=color, label=label)
    ax_loss.set(xlabel="step", ylabel="cross-entropy (nats/token)", title="loss")
    ax_bpc.set(xlabel="step", ylabel="bits per character", title="validation bits per character")
    for ax in (ax_loss, ax_bpc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save(fig, out_png)


def plot_bars(results, metrics, out_png, title):
    """results: {model: {metric: value}}; one group of bars per metric."""
    models = list(results)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) * max(1, len(models)) / 2), 4.5))
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        xs = [j + i * width for j in range(len(metrics))]
        ax.bar(xs, [results[m].get(k, 0) or 0 for k in metrics], width=width, label=m, color=f"C{i % 10}")
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels(metrics, rotation=20)
    ax.set(title=title, ylim=(0, 1))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out_png)


def plot_per_question(scores, out_png, title):
    """scores: {model: [rouge_l_f per question]}; one line per model over the question index."""
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for i, (m, vals) in enumerate(scores.items()):
        ax.plot(range(len(vals)), vals, marker=".", linestyle="-", alpha=0.75, color=f"C{i % 10}", label=m)
    ax.set(xlabel="question", ylabel="ROUGE-L F1", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out_png)
