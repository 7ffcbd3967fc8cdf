"""Paired encoding contrasts of evaluated runs (docs/encodings.md): per (run, attention, task, length) the mean
of a metric under each encoding, and `A - B` differences with 95% bootstrap intervals over queries (the same
queries on both sides; the runs' training seeds are crossed in when there are several).

    python scripts/encoding_contrasts.py RESULTS... [--metric mrr_at_10] [--pairs chunked-max:full echo:full]
    python scripts/encoding_contrasts.py RESULTS... --across attention     # bidirectional - causal per encoding

RESULTS are results tables or folders (a study folder, a run folder with its eval-*/ subfolders).
A run evaluated under several encodings (`study eval runs/<run> model.encoding=...`) contributes one row
per encoding; `--by-aggregate` keeps chunked-mean and chunked-max apart.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from analysis import stats
from analysis.load import normalise


def load(paths: list[str]) -> pd.DataFrame:

    frames = []
    for p in map(Path, paths):
        files = [p] if p.is_file() else sorted(p.glob("**/results.parquet"))
        for f in files:
            df = pd.read_parquet(f)
            cfg = f.parent / "config.yaml"
            aggregate = None
            if cfg.is_file():
                from omegaconf import OmegaConf

                c = OmegaConf.load(cfg)
                aggregate = OmegaConf.select(c, "model.chunk.aggregate")
            if "encoding" not in df:
                df["encoding"] = "full"
            df["encoding"] = [f"chunked-{aggregate}" if e == "chunked" and aggregate else e for e in df.encoding]
            frames.append(df)
    out = normalise(pd.concat(frames, ignore_index=True))
    # a study folder's union table repeats its trials' rows
    return out.drop_duplicates(["run_id", "encoding", "task", "length", "query_id", "metric"])


def contrasts(df: pd.DataFrame, metric: str, pairs: list[tuple[str, str]], n_resamples: int = 2000,
              column: str = "encoding") -> pd.DataFrame:
    """`A - B` over `column` (encoding, or attention with pairs like bidirectional:causal), within each value of
    the other of the two, task and length."""
    within = "attention" if column == "encoding" else "encoding"
    rows = df[df.query_id.notna() & (df.metric == metric)]
    out = []
    for (held, task, length), g in rows.groupby([within, "task", "length"]):
        means = g.groupby(column).value.mean()
        for a, b in pairs:
            if a not in means or b not in means:
                continue
            _, _, d = stats.paired_matrix(g, a, b, column=column)
            lo, hi = stats.percentile_interval(stats.two_way_bootstrap(d, n_resamples))
            out.append({within: held, "task": task, "length": int(length), "contrast": f"{a} - {b}",
                        "a": means[a], "b": means[b], "diff": d.mean(), "ci_low": lo, "ci_high": hi,
                        "seeds": len(d.seeds), "queries": len(d.units),
                        "visible_a": g[g[column] == a].answer_visible.astype("Float64").mean(),
                        "visible_b": g[g[column] == b].answer_visible.astype("Float64").mean()})
    return pd.DataFrame(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+")
    p.add_argument("--metric", default="mrr_at_10")
    p.add_argument("--pairs", nargs="+", help="A:B pairs (default: chunked-mean:full chunked-max:full echo:full, "
                                               "or bidirectional:causal with --across attention)")
    p.add_argument("--across", choices=("encoding", "attention"), default="encoding",
                   help="contrast encodings within each attention (default), or attention within each encoding")
    args = p.parse_args()
    default = ["bidirectional:causal"] if args.across == "attention" else ["chunked-mean:full", "chunked-max:full",
                                                                           "echo:full"]
    df = load(args.results)
    table = contrasts(df, args.metric, [tuple(x.split(":")) for x in args.pairs or default], column=args.across)
    pd.set_option("display.width", 200)
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
