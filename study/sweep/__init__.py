"""Optuna sweeps over config keys: each trial is one full train + evaluate run.

    sweeps/*.yaml --spec.py--> SweepSpec (validated before anything starts)
                  --storage.py--> Optuna storage (SQLite file, any RDB URL, or a journal file)
                  --dispatch.py--> study created once, grid cells enqueued once, N workers pop trials
                  --status.py--> a readable table of trials, states and failures

Layout of a study: runs/<study>/optuna.db (default storage), sweep.yaml (the spec),
trials/<n>/ (one run folder per trial) and results.parquet (the union of finished trials).

Nothing is imported here: `study.sweep.storage` (read by every command for secrets) stays light.
"""
