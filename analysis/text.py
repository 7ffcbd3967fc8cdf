"""The report's plain-language summary, generated from the numbers (never written by hand).

It states the sample sizes, every headline interval, what is and is not
significant after correction, and compares the result with the paper's claim
plainly, including when the tiny-scale study disagrees.
"""

from __future__ import annotations

import pandas as pd

from analysis.references import chance
from analysis.stats import cell_keys, cell_label

# Paper, Figure 1: long-document (LongEmbed) average, AR + LLM2Vec 42 vs Dream (DiffEmbed) 62.
PAPER_GAP = 0.20
PAPER_CLAIM = ("The paper (Zhang et al., 2025) reports bidirectional (diffusion) embeddings about 20 nDCG points "
               "above autoregressive ones on long documents (LongEmbed average 62 vs 42, 7B models)")


def points(x: float) -> str:
    """0..1 score difference -> signed points, one decimal."""
    return f"{100 * x:+.1f}"


def sample_sizes(rows: pd.DataFrame) -> dict:
    """What the numbers rest on: runs, seeds, backbones, poolings, tasks, lengths, queries per (task, length)."""
    per_group = rows.groupby(["task", "length"]).query_id.nunique()
    return {
        "runs": int(rows.run_id.nunique()),
        "seeds": sorted(int(s) for s in rows.seed.dropna().unique()),
        "backbones": sorted(rows.backbone.dropna().unique()),
        "poolings": sorted(rows.pooling.dropna().unique()),
        "tasks": sorted(rows.task.dropna().unique()),
        "lengths": sorted(int(x) for x in rows.length.dropna().unique()),
        "queries_min": int(per_group.min()) if len(per_group) else 0,
        "queries_max": int(per_group.max()) if len(per_group) else 0,
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _queries(s: dict) -> str:
    q = s["queries_min"] if s["queries_min"] == s["queries_max"] else f"{s['queries_min']}-{s['queries_max']}"
    return f"{q} queries per task and length"


def describe_difference(r, metric: str) -> str:
    """One headline cell in words: difference, interval, p-values, verdict."""
    cell = cell_label(r)
    core = (f"{cell}: bidirectional {100 * r.bidirectional:.1f} vs causal {100 * r.causal:.1f} {metric} points, "
            f"difference {points(r['diff'])} [95% CI {points(r.ci_low)}, {points(r.ci_high)}], "
            f"p = {r.p_value:.3g} (corrected {r.p_adjusted:.3g}; {_plural(r.n_seeds, 'seed')} x "
            f"{_plural(r.n_queries, 'query').replace('querys', 'queries')})")
    if not r.significant:
        why = ("not significant: the interval, which includes seed-to-seed variation, covers zero"
               if r.ci_low <= 0 <= r.ci_high else "not significant after correction")
        if r.ci_high >= PAPER_GAP:
            return core + f" - {why}; the interval still reaches the paper's +20 " \
                          "points, so this study is too small to rule that effect out."
        return core + f" - {why}, and the interval excludes the paper's +20 points."
    if r["diff"] < 0:
        return core + " - significant, and causal attention is better."
    if r.ci_high < PAPER_GAP:
        size = "smaller than the paper's ~20 points (the interval excludes +20)"
    elif r.ci_low > PAPER_GAP:
        size = "larger than the paper's ~20 points"
    else:
        size = "compatible with the paper's ~20 points"
    return core + f" - significant, bidirectional is better; {size}."


def verdict(headline: pd.DataFrame) -> str:
    """Does the tiny-scale result agree with the paper's direction? Said plainly."""
    if headline.empty:
        return ("**No comparison possible**: no backbone/pooling cell has both bidirectional and causal runs on the "
                "same seeds and queries.")
    pos = headline.significant & (headline["diff"] > 0)
    neg = headline.significant & (headline["diff"] < 0)
    if len(headline) and pos.all():
        return "**Agrees with the paper in direction**: bidirectional attention is significantly better in every " \
               "backbone/pooling cell."
    if neg.any() and not pos.any():
        return "**Disagrees with the paper**: where the difference is significant, causal attention is better."
    if not pos.any():
        return "**Does not reproduce the paper's advantage**: no backbone/pooling cell shows a significant " \
               "bidirectional advantage at this scale."
    return (f"**Partly agrees with the paper**: {int(pos.sum())} of {len(headline)} backbone/pooling cells show a "
            f"significant bidirectional advantage, {int(neg.sum())} a significant causal one, "
            f"the rest no significant difference.")


def _same_cell(table: pd.DataFrame, cell: pd.Series) -> pd.Series:
    """Rows of `table` in the same cell (backbone, encoding when both have it, pooling) as `cell`."""
    key = (table.backbone == cell.backbone) & (table.pooling == cell.pooling)
    if "encoding" in table and "encoding" in cell:
        key &= table.encoding.astype(str) == str(cell.encoding)
    return key


def _detectable(detectable: dict, r) -> float | None:
    """A cell's smallest detectable difference, keyed (backbone, encoding, pooling) or (backbone, pooling)."""
    for key in ((r.backbone, r.get("encoding"), r.pooling), (r.backbone, r.pooling)):
        if key in detectable:
            return detectable[key]
    return None


def _where(cell: pd.Series, by_length: pd.DataFrame, by_depth: pd.DataFrame) -> str:
    """Where in the data a cell's difference arises: its significant lengths and depths, if any."""
    key = _same_cell(by_length, cell)
    sig = by_length[key & by_length.significant]
    parts = []
    if len(sig):
        parts.append("at " + ", ".join(f"{r.task} {int(r.length)} ({points(r['diff'])})" for _, r in sig.iterrows()))
    if by_depth is not None and len(by_depth):
        d = by_depth[_same_cell(by_depth, cell) & by_depth.significant]
        if len(d):
            parts.append("with the answer at depth " + ", ".join(
                f"{b} ({points(g['diff'].mean())})" for b, g in d.groupby(d.depth_bucket.astype(str))))
    return ("; the difference is significant " + " and ".join(parts)) if parts else \
        "; no single task, length or depth differs significantly"


def learning_sentence(rows: pd.DataFrame, metric: str = "ndcg_at_1", tasks=("passkey", "needle")) -> str:
    """How far the models learned: the best and the worst cell at the shortest length, against chance."""

    have = rows[rows.task.isin(tasks) & rows.length.notna()]
    if have.empty:
        return ""
    shortest = int(have.length.min())
    at = have[have.length == shortest]
    cells = at.groupby(cell_keys(at, "task", attention=True)).value.mean().unstack("task")
    if cells.empty:
        return ""
    n = int(at.candidates.median()) if at.candidates.notna().any() else None
    best = cells.mean(axis=1).idxmax()
    worst = cells.mean(axis=1).idxmin()
    fmt = lambda key: ", ".join(f"{t} {cells.loc[key, t]:.2f}" for t in cells.columns)  # noqa: E731
    level = f"; chance is {chance(metric, n):.3f} with {n} candidates" if n else ""
    means = cells.mean(axis=1)
    if means[best] == means[worst]:
        return f"How far the models learned ({metric} at {shortest} tokens{level}): every cell {fmt(best)}."
    return (f"How far the models learned ({metric} at {shortest} tokens{level}): best cell "
            f"{' / '.join(map(str, best))} {fmt(best)}; worst cell {' / '.join(map(str, worst))} {fmt(worst)}.")


def answer_paragraph(primary: pd.DataFrame, by_length: pd.DataFrame, by_depth: pd.DataFrame | None,
                     detectable: dict, metric: str, lengths: list[int], learned: str = "") -> str:
    """The report's first paragraph: the answer at tiny scale, in plain words, with numbers and intervals.

    primary: paired_differences per (backbone, pooling) over every task and length; by_length /
    by_depth: the same per (task, length) and per depth bucket; detectable: {(backbone, pooling):
    smallest difference found with 80% power}; learned: one sentence on how far the models learned."""
    if primary.empty:
        return ("**Answer.** No comparison is possible yet: no backbone/pooling cell has both bidirectional and "
                "causal runs on the same seeds.")
    span = f"{min(lengths)}-{max(lengths)} tokens" if lengths else "all lengths"
    cells = []
    for _, r in primary.iterrows():
        verdict = ("bidirectional is better" if r.significant and r["diff"] > 0 else
                   "causal is better" if r.significant else "no significant difference")
        mde = _detectable(detectable, r)
        cells.append(f"{cell_label(r)}: {points(r['diff'])} points [95% CI {points(r.ci_low)}, "
                     f"{points(r.ci_high)}], {verdict} (corrected p = {r.p_adjusted:.2g}, "
                     f"{_plural(int(r.n_seeds), 'seed')} x {int(r.n_queries)} queries"
                     + (f"; smallest detectable difference {100 * mde:.1f} points" if mde is not None else "")
                     + ")" + _where(r, by_length, by_depth))
    pos = primary.significant & (primary["diff"] > 0)
    if pos.all():
        headline = "bidirectional attention helps long-context retrieval at this scale"
    elif not (primary.significant).any():
        widest = max(abs(primary.ci_low).max(), abs(primary.ci_high).max())
        headline = (f"bidirectional attention does not measurably help at this scale: every difference is within "
                    f"{100 * widest:.0f} points of zero")
    elif pos.any():
        headline = "bidirectional attention helps in some cells and not in others"
    else:
        headline = "causal attention is better where the two differ at this scale"
    lines = [
        f"**Answer (tiny scale).** Bidirectional minus causal attention, {metric} averaged over tasks and "
        f"lengths ({span}): " + "; ".join(cells) + f". In short: {headline}.",
    ]
    if learned:
        lines.append(learned)
    lines.append("The paper reports about +20 points on LongEmbed for 7B models that were pretrained for the "
                 "direction they use (Dream vs autoregressive LMs); this study switches only the attention mask of "
                 "one small model and fine-tunes it briefly, so it tests whether the mask alone changes what a "
                 "model can encode, not what billions of tokens of bidirectional pretraining teach.")
    return " ".join(lines)


def summary_text(rows: pd.DataFrame, primary: pd.DataFrame, by_length: pd.DataFrame, metric: str = "ndcg_at_1",
                 correction: str = "holm", per_query: bool = True, answer: str = "") -> str:
    """The whole summary as Markdown: the answer first, then the data, the method and every cell.

    rows: the evaluation rows analysed; primary: paired_differences per (backbone, pooling) over all tasks and
    lengths; by_length: paired_differences per (backbone, pooling, task, length)."""
    s = sample_sizes(rows)
    method = {"holm": "Holm (family-wise)", "bh": "Benjamini-Hochberg (false discovery rate)"}[correction]
    lines = ["## Summary", ""] + ([answer, ""] if answer else []) + [
        f"**Data.** {s['runs']} evaluated runs: backbones {', '.join(s['backbones'])}; poolings "
        f"{', '.join(s['poolings'])}; {_plural(len(s['seeds']), 'training seed')} ({', '.join(map(str, s['seeds']))}); tasks "
        f"{', '.join(s['tasks'])}; document lengths {', '.join(map(str, s['lengths']))} tokens; {_queries(s)}. "
        f"Metric: {metric}, in points (x100).",
        "",
        "**Method.** Means with 95% two-way bootstrap intervals (seeds and queries resampled); paired differences "
        "bidirectional - causal on the same seeds and queries, every task weighted equally and every length within "
        "a task; two-sided sign-flip permutation p-values over queries, corrected with "
        f"{method} across the cells of each table. A difference is called significant when its corrected p-value "
        "is below 0.05 and its interval excludes zero.",
    ]
    if not per_query:
        lines.append("*Only aggregate scores were available (no per-query rows): intervals and tests are over "
                     "seeds only and are weak.*")
    if len(s["seeds"]) == 1:
        lines.append("*One training seed: the intervals cover query sampling only, not training randomness.*")
    lines += ["", "**Per backbone and pooling** (all tasks and lengths):", ""]
    lines += [f"- {describe_difference(r, metric)}" for _, r in primary.iterrows()]
    sig = by_length[by_length.significant]
    lines += ["", f"**Per task and length**: {len(sig)} of {len(by_length)} cells differ significantly after "
              "correction."]
    if len(sig):
        lines.append("Significant: " + "; ".join(
            f"{r.backbone}/{r.pooling} {r.task} {int(r.length)} ({points(r['diff'])})" for _, r in sig.iterrows())
            + ".")
    nonsig = by_length[~by_length.significant]
    if len(nonsig):
        lines.append("Not significant: " + "; ".join(
            f"{r.backbone}/{r.pooling} {r.task} {int(r.length)} ({points(r['diff'])})" for _, r in nonsig.iterrows())
            + ".")
    lines += ["", f"**Compared with the paper.** {PAPER_CLAIM}. Here: {verdict(primary)}",
              "", "*Caveats.* Tiny models on synthetic long-context tasks with few seeds; the paper compares "
              "different 7B backbones (a diffusion LM vs AR LMs), this study switches the attention direction of one "
              "backbone. The p-values test 'no difference on these queries for these trained models'; seed-to-seed "
              "variation enters the intervals."]
    return "\n".join(lines)
