"""Analysis of study results: load tables (local or W&B), statistics with intervals, plots, the report.

Notebooks in notebooks/ only call these functions; everything here is tested on
fixture tables with known answers (tests/test_analysis*.py).

    load     results tables from study folders / files / the W&B public API -> one schema
    stats    bootstrap intervals, paired bidirectional-minus-causal differences, corrections
    plots    matplotlib figures (headless)
    sweep    trial table, parameter effects and importances of a sweep
    text     the plain-language summary (sample sizes, intervals, significance, the paper)
    report   `study report`: execute the notebooks, render HTML, log to W&B
"""

import warnings as _warnings

# Optuna imports tqdm.auto, which warns inside notebooks without ipywidgets; the report has no progress bars.
_warnings.filterwarnings("ignore", message="IProgress not found")
