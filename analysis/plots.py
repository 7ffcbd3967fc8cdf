"""Figures (matplotlib, headless): each function takes a computed table and returns a Figure.

Conventions, the same in every figure: colour = pooling (encoding / pooling when a study varies
model.encoding), line style = attention
(solid bidirectional, dashed causal), scores in the metric's own 0..1 units,
differences as bidirectional minus causal.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND") and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # headless scripts and tests; notebooks keep their inline backend
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

LINESTYLE = {"bidirectional": "-", "causal": "--"}


def _colours(values) -> dict:
    cmap = plt.get_cmap("tab10")
    return {v: cmap(i % 10) for i, v in enumerate(sorted(map(str, set(values))))}


def _colour_key(cells: pd.DataFrame) -> pd.Series:
    """What a line's colour stands for: the pooling, or 'encoding / pooling' when the encodings differ."""
    pooling = cells.pooling.astype(str)
    if "encoding" in cells and cells.encoding.astype(str).nunique() > 1:
        return cells.encoding.astype(str) + " / " + pooling
    return pooling


def _grid(n_rows: int, n_cols: int, width: float = 4.2, height: float = 3.2):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows), squeeze=False)
    return fig, axes


def save_figure(fig, out_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Save `fig` as `<out_dir>/<name>.png` (folders created) and return the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def plot_score_vs_length(cells: pd.DataFrame, metric: str = "ndcg_at_1", chance: pd.DataFrame | None = None,
                         references: pd.DataFrame | None = None, ceilings: pd.DataFrame | None = None):
    """Score vs document length with 95% bands and the lines to read them against.

    Panels task (rows) x backbone (columns). `cells`: stats.cell_means(rows, by=[backbone, attention, pooling,
    task, length]). Optional reference lines (analysis.references): `chance` (grey dotted) per (task, length),
    `references` (BM25 on the same documents, black) per (backbone, task, length), and `ceilings` (the
    truncation ceiling of the panel's model, red dash-dot: the share of answers inside the encoded tokens).
    """
    tasks, backbones = sorted(cells.task.unique()), sorted(cells.backbone.unique())
    cells = cells.assign(_colour=_colour_key(cells))
    colours = _colours(cells._colour)
    fig, axes = _grid(len(tasks), len(backbones))
    for (i, task), (j, backbone) in ((a, b) for a in enumerate(tasks) for b in enumerate(backbones)):
        ax = axes[i][j]
        panel = cells[(cells.task == task) & (cells.backbone == backbone)]
        for (attention, colour), g in panel.groupby(["attention", "_colour"]):
            g = g.sort_values("length")
            x = g.length.astype(float)
            ax.plot(x, g["mean"], LINESTYLE.get(attention, ":"), marker="o", color=colours[str(colour)],
                    label=f"{attention} / {colour}")
            ax.fill_between(x, g.ci_low, g.ci_high, color=colours[str(colour)], alpha=0.15)
        _reference_line(ax, chance, task, "chance", ":", "grey", "chance")
        if references is not None:
            for ref in sorted(references.backbone.dropna().unique()):
                _reference_line(ax, references[references.backbone == ref], task, "mean", "-", "black",
                                f"{ref} (same documents)")
        if ceilings is not None:
            _reference_line(ax, ceilings[ceilings.backbone == backbone], task, "ceiling", "-.", "red",
                            "truncation ceiling")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{task} - {backbone}")
        ax.set_xlabel("document length (tokens)")
        ax.set_ylabel(metric)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _reference_line(ax, table: pd.DataFrame | None, task: str, column: str, style: str, colour, label: str):
    """One reference line of a panel (thin, no markers) if `table` has values for the task."""
    if table is None or table.empty:
        return
    g = table[(table.task == task) & table.length.notna()].sort_values("length")
    if g.empty:
        return
    ax.plot(g.length.astype(float), g[column].astype(float), style, color=colour, linewidth=1.1, label=label)


def _heatmap(ax, table: pd.DataFrame, cmap: str, vmin: float, vmax: float, marks=None):
    """One length x depth heatmap with the values written in."""
    im = ax.imshow(table.to_numpy(dtype=float), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", origin="lower")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=45, fontsize=7)
    ax.set_yticks(range(table.shape[0]), [str(int(r)) for r in table.index], fontsize=7)
    for (r, c), v in np.ndenumerate(table.to_numpy(dtype=float)):
        if not np.isnan(v):
            star = "*" if marks is not None and bool(marks.iat[r, c]) else ""
            ax.text(c, r, f"{v:.2f}{star}", ha="center", va="center", fontsize=7)
    ax.set_xlabel("needle depth")
    ax.set_ylabel("length")
    return im


def plot_depth_heatmaps(cells: pd.DataFrame, diffs: pd.DataFrame, task: str, metric: str = "ndcg_at_1"):
    """Length x needle-depth heatmaps of one task: bidirectional, causal, and their difference.

    Rows are (backbone, pooling); `cells` is cell_means by [backbone, attention,
    pooling, task, length, depth_bucket]; `diffs` is paired_differences by
    [backbone, pooling, task, length, depth_bucket]; '*' marks corrected-significant cells.
    """
    cells, diffs = cells[cells.task == task], diffs[diffs.task == task]
    if "encoding" not in cells:
        cells = cells.assign(encoding="full")
    if "encoding" not in diffs:
        diffs = diffs.assign(encoding="full")
    combos = sorted({(b, str(e), p) for b, e, p in zip(cells.backbone, cells.encoding, cells.pooling)})
    fig, axes = _grid(len(combos), 3, width=4.4, height=3.0)
    lim = max(0.05, float(np.nanmax(np.abs(diffs["diff"])))) if len(diffs) else 1.0
    for i, (backbone, encoding, pooling) in enumerate(combos):
        name = f"{backbone} / {pooling}" if encoding == "full" else f"{backbone} / {encoding} / {pooling}"
        same = lambda t: (t.backbone == backbone) & (t.pooling == pooling) & (t.encoding.astype(str) == encoding)  # noqa: E731
        for j, attention in enumerate(["bidirectional", "causal"]):
            g = cells[same(cells) & (cells.attention == attention)]
            ax = axes[i][j]
            if g.empty:
                ax.set_axis_off()
                continue
            _heatmap(ax, g.pivot(index="length", columns="depth_bucket", values="mean"), "viridis", 0, 1)
            ax.set_title(f"{name}: {attention}", fontsize=9)
        d = diffs[same(diffs)]
        ax = axes[i][2]
        if d.empty:
            ax.set_axis_off()
            continue
        im = _heatmap(ax, d.pivot(index="length", columns="depth_bucket", values="diff"), "RdBu", -lim, lim,
                      d.pivot(index="length", columns="depth_bucket", values="significant"))
        ax.set_title(f"{name}: bidirectional - causal", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{task}: {metric} by document length and needle depth")
    fig.tight_layout()
    return fig


def plot_forest(diffs: pd.DataFrame, label_cols: list[str], metric: str = "ndcg_at_1"):
    """Paired differences (bidirectional - causal) with 95% intervals, one line per cell.

    Filled markers: significant after correction; hollow: not.
    """
    d = diffs.reset_index(drop=True)
    labels = [" / ".join(str(r[c]) for c in label_cols) for _, r in d.iterrows()]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(d) + 1.2))
    y = np.arange(len(d))[::-1]
    ax.errorbar(d["diff"], y, xerr=[d["diff"] - d.ci_low, d.ci_high - d["diff"]], fmt="none", ecolor="grey")
    sig = d.significant.fillna(False).astype(bool).to_numpy()
    ax.scatter(d["diff"][sig], y[sig], color="tab:red", zorder=3, label="significant (corrected)")
    ax.scatter(d["diff"][~sig], y[~sig], facecolors="white", edgecolors="tab:blue", zorder=3,
               label="not significant")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"{metric}: bidirectional - causal (95% CI)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _x_axis(g: pd.DataFrame) -> str | None:
    """The varying position column of probe rows: depth (relative position), else length, else none."""
    for col in ("depth", "length"):
        if col in g and g[col].nunique() > 1:
            return col
    return None


def plot_probes(df: pd.DataFrame) -> dict:
    """One figure per probe task (`task` starting with 'probe/'), one panel per metric.

    x is the depth (relative position) or the length when they vary; lines are
    backbone x attention (mean over seeds and rows, band = min..max over seeds).
    """
    probes = df[df.task.astype("string").fillna("").str.startswith("probe/")]
    if "layer" in probes:  # study probe's attention rows: per layer and averaged (layer null); plot the average
        probes = probes[probes.layer.isna()]
    figures = {}
    for task, t in probes.groupby("task"):
        metrics = sorted(t.metric.unique())
        n_cols = min(3, len(metrics))
        fig, axes = _grid(int(np.ceil(len(metrics) / n_cols)), n_cols, width=4.0, height=3.0)
        for k, metric in enumerate(metrics):
            ax = axes[k // n_cols][k % n_cols]
            _probe_panel(ax, t[t.metric == metric])
            ax.set_title(metric, fontsize=9)
        for k in range(len(metrics), axes.size):
            axes[k // n_cols][k % n_cols].set_axis_off()
        axes[0][0].legend(fontsize=7)
        fig.suptitle(task)
        fig.tight_layout()
        figures[task] = fig
    return figures


def _probe_panel(ax, g: pd.DataFrame) -> None:
    x = _x_axis(g)
    labels = g.backbone.astype(str) + " / " + g.attention.astype(str)
    if g.query_id.notna().any():  # per-document rows when there are any (aggregates repeat them)
        g, labels = g[g.query_id.notna()], labels[g.query_id.notna()]
    if x == "depth":
        g = g[g.depth.notna()]
        labels = labels[g.index]
        if g.length.nunique() > 1:  # one line per document length too
            labels = labels + " / " + g.length.astype(str)
    if x is None:
        means = g.groupby(labels).value.mean()
        ax.bar(range(len(means)), means.to_numpy(), color="tab:blue")
        ax.set_xticks(range(len(means)), means.index, rotation=30, fontsize=7)
        return
    for label, h in g.groupby(labels):
        per_seed = h.groupby(["seed", x], dropna=False).value.mean().unstack(x)
        xs = per_seed.columns.to_numpy(dtype=float)
        ax.plot(xs, per_seed.mean().to_numpy(), LINESTYLE.get(label.split(" / ")[1], ":"), marker=".",
                label=label)
        ax.fill_between(xs, per_seed.min().to_numpy(), per_seed.max().to_numpy(), alpha=0.15)
    ax.set_xlabel(x)


def plot_attention_layers(df: pd.DataFrame):
    """Attention metrics by layer (study probe's per-layer `probe/attention_distance` rows), one panel per metric;
    lines are backbone x attention x length (mean over seeds and runs, band = min..max over seeds); None if absent."""
    if "layer" not in df:
        return None
    att = df[(df.task.astype("string") == "probe/attention_distance") & df.layer.notna()]
    if att.empty:
        return None
    metrics = sorted(att.metric.unique())
    n_cols = min(4, len(metrics))
    fig, axes = _grid(int(np.ceil(len(metrics) / n_cols)), n_cols, width=3.6, height=2.8)
    for k, metric in enumerate(metrics):
        ax = axes[k // n_cols][k % n_cols]
        for (backbone, attention, length), g in att[att.metric == metric].groupby(
                ["backbone", "attention", "length"]):
            per_seed = g.groupby(["seed", "layer"]).value.mean().unstack("layer")
            xs = per_seed.columns.to_numpy(dtype=float)
            ax.plot(xs, per_seed.mean().to_numpy(), LINESTYLE.get(attention, ":"), marker=".",
                    label=f"{backbone} / {attention} / {length}")
            ax.fill_between(xs, per_seed.min().to_numpy(), per_seed.max().to_numpy(), alpha=0.15)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for k in range(len(metrics), axes.size):
        axes[k // n_cols][k % n_cols].set_axis_off()
    axes[0][0].legend(fontsize=7, title="backbone / attention / length", title_fontsize=7)
    fig.suptitle("attention by layer")
    fig.tight_layout()
    return fig


def plot_pretraining(df: pd.DataFrame):
    """Pretraining loss curves (task 'pretrain', metrics train_loss/val_loss, a `step` column); None if absent."""
    if "step" not in df:
        return None
    pre = df[(df.task == "pretrain") & df.metric.isin(["train_loss", "val_loss"]) & df.step.notna()]
    if pre.empty:
        return None
    keys = [c for c in ("backbone", "objective", "attention", "seed") if c in pre and pre[c].notna().any()]
    fig, axes = _grid(1, 2, width=5.0, height=3.4)
    for ax, metric in zip(axes[0], ["train_loss", "val_loss"]):
        for key, g in pre[pre.metric == metric].groupby(keys, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            g = g.sort_values("step")
            ax.plot(g.step.astype(float), g.value, marker="." if metric == "val_loss" else None,
                    label=" / ".join(map(str, key)))
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
