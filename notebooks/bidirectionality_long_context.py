# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # How does bidirectional attention affect long-context embeddings?
#
# Bidirectional vs causal attention, same backbones, poolings, seeds and evaluation queries.
# All numbers come from `analysis/` (tested); this notebook only calls it. Re-run it on any study with
# `study report --study NAME`, `--results PATH ...` or `--wandb ENTITY/PROJECT --group GROUP`.

# %% tags=["parameters"]
results = []  # results tables, run folders or study folders; empty -> `study` or W&B
study = ""  # a study name under runs/ (used when `results` is empty)
wandb_project = ""  # ENTITY/PROJECT to read from the W&B public API instead
wandb_group = ""  # the study's W&B group
output_dir = "reports"  # figures/ and tables/ are written here
companions = True  # also load probe tables, pretraining curves and reference (BM25) rows found next to local results
metric = "mrr_at_10"  # the primary contrast's metric (less variance than a single top-1 hit)
second_metric = "ndcg_at_1"  # LongEmbed's metric for the synthetic tasks, reported alongside
correction = "holm"  # multiple-comparison correction: holm | bh
n_resamples = 2000  # bootstrap resamples

# %%
from pathlib import Path

from IPython.display import Markdown, display

from analysis import plots, power, references, stats
from analysis.load import evaluation_units, has_per_query
from analysis.report import load_results, save_table, show
from analysis.text import answer_paragraph, learning_sentence, summary_text

df = load_results(results, study, wandb_project, wandb_group, companions=companions)
per_query = has_per_query(df)
kw = dict(n_resamples=n_resamples)
rows, refs = references.split_references(evaluation_units(df, metric))
rows2, _ = references.split_references(evaluation_units(df, second_metric))
lengths = sorted(int(x) for x in rows.length.dropna().unique())
# The primary contrast: bidirectional - causal per cell (backbone, encoding, pooling), over every task and length.
cell = stats.cell_keys(rows)
primary = stats.paired_differences(rows, cell, correction=correction, **kw)
by_length = stats.paired_differences(rows, cell + ["task", "length"], correction=correction, **kw)
by_depth = stats.paired_differences(rows[rows.depth_bucket.notna()], cell + ["depth_bucket"],
                                    correction=correction, **kw)
components = power.cell_components(rows, tuple(cell))
detectable = power.detectable_by_cell(components, tuple(cell))
learned = learning_sentence(rows2, second_metric)
answer = answer_paragraph(primary, by_length, by_depth, detectable, metric, lengths, learned)
summary = summary_text(rows, primary, by_length, metric, correction, per_query, answer=answer)
Path(output_dir).mkdir(parents=True, exist_ok=True)
Path(output_dir, "summary.md").write_text(summary)
save_table(primary, output_dir, "primary_contrast")
save_table(components.assign(detectable=[detectable[tuple(r[k] for k in cell)] for _, r in components.iterrows()]),
           output_dir, "power")
display(Markdown(summary))

# %% [markdown]
# ## Score vs document length
# Mean over seeds and queries; bands are 95% two-way bootstrap intervals (seeds and queries resampled).
# Solid lines: bidirectional; dashed: causal; colour: pooling. Reference lines: chance (grey dotted, from the
# candidate pool), BM25 on the same documents (black), and the model's truncation ceiling (red dash-dot: the
# share of answers inside the tokens it encoded).

# %%
chance = references.chance_by_length(rows, metric)
ceilings = references.ceiling_by_length(rows)
bm25 = references.reference_by_length(refs)
for name, table in ((metric, rows), (second_metric, rows2)):
    cells = stats.cell_means(table, stats.cell_keys(table, "task", "length", attention=True), **kw)
    save_table(cells, output_dir, f"score_by_length_{name}")
    _, table_refs = references.split_references(evaluation_units(df, name))
    show(plots.plot_score_vs_length(cells, name, references.chance_by_length(table, name), ceilings=ceilings,
                                    references=references.reference_by_length(table_refs)),
         output_dir, "score_vs_length" if name == metric else f"score_vs_length_{name}")

# %% [markdown]
# ## Answer visible vs answer truncated
# Queries whose answer lies inside the encoded tokens, and queries whose answer was cut off by truncation
# (tasks that record where the answer is). A model cannot find what it never read: the truncated rows show
# what is left to a document's other text.

# %%
split = references.visibility_split(rows)
if split.answer.nunique() > 1:
    vis = stats.cell_means(split, stats.cell_keys(split, "task", "answer", attention=True), **kw)
    save_table(vis, output_dir, "score_by_visibility")
    display(vis.round(3))
else:
    display(Markdown("*Every recorded answer was inside the encoded tokens (no truncation at these lengths).*"))

# %% [markdown]
# ## Document length x needle depth
# Per attention direction, and their paired difference (bidirectional - causal; `*`: significant after
# correction across the cells of that heatmap table).

# %%
if rows.depth_bucket.notna().any():
    depth_keys = cell + ["task", "length", "depth_bucket"]
    depth_cells = stats.cell_means(rows, stats.cell_keys(rows, "task", "length", "depth_bucket", attention=True), **kw)
    depth_diffs = stats.paired_differences(rows, depth_keys, correction=correction, **kw)
    save_table(depth_diffs, output_dir, "paired_differences_by_depth")
    for task in sorted(depth_cells.task.unique()):
        show(plots.plot_depth_heatmaps(depth_cells, depth_diffs, task, metric), output_dir, f"depth_heatmap_{task}")
else:
    display(Markdown("*No needle depths in these results (aggregate-only data): no heatmaps.*"))

# %% [markdown]
# ## Paired differences: bidirectional - causal
# Same seeds and queries on both sides. `p_value`: two-sided sign-flip permutation test over queries;
# `p_adjusted`: corrected across the rows of this table; `significant`: `p_adjusted` < 0.05.

# %%
save_table(by_length, output_dir, "paired_differences")
display(primary.round(4))
display(by_length.round(4))
show(plots.plot_forest(by_length, cell + ["task", "length"], metric), output_dir, "paired_differences")

# %% [markdown]
# ## Summary table (the paper's layout)
# Rows backbone x encoding x attention x pooling; columns per task (mean over lengths) and their average, in points
# (x100); second table: 95% intervals.

# %%
scores, intervals = stats.summary_table(rows, **kw)
save_table(scores.round(2), output_dir, "summary_table")
display(scores.round(1))
display(intervals)

# %% [markdown]
# ## Bidirectionality probes
# Attention mass by distance and direction, and how much embeddings and states change when later text changes
# (rows with task `probe/...`, when the study ran the probes).

# %%
probe_figures = plots.plot_probes(df)
for task, fig in probe_figures.items():
    show(fig, output_dir, task.replace("/", "_"))
if not probe_figures:
    display(Markdown("*No probe results in this study.*"))

# %% [markdown]
# Attention by layer: the share of attention far away (`far_mass_D<D>`, more than D tokens), on the N tokens just
# after / before each query (`forward_mass_<N>` / `backward_mass_<N>`; 0 after under causal attention) and how
# spread out it is (`entropy`, nats; `entropy_norm`, 1 = uniform over the keys a query can see).
# The paper looked at the last layer only.

# %%
show(plots.plot_attention_layers(df), output_dir, "probe_attention_layers")  # nothing without per-layer probe rows
