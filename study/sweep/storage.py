"""Where a study lives: a SQLite file (one machine), any RDB URL, or a journal file (shared file system).

    default            sqlite:///runs/<study>/optuna.db   (one machine; SQLite on NFS corrupts)
    postgresql://...   any SQLAlchemy URL Optuna's RDBStorage accepts (many machines)
    path.log|.journal  JournalStorage(JournalFileBackend) on a shared file system (many machines)

RDB storages get heartbeats: a worker killed mid-trial stops beating, and the next
worker that looks (at each trial start, and while waiting at the end of a grid) marks
the trial FAIL and re-queues its cell (RetryHeartbeatStaleTrialCallback). Optuna's
journal storage has no heartbeat, so a killed trial stays RUNNING there.

Storage URLs may hold passwords: everything printed or recorded goes through mask_url.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path

from study.errors import ConfigError
from study.paths import writable_dir

JOURNAL_SUFFIXES = (".log", ".journal")


def default_url(study_dir: Path) -> str:
    return f"sqlite:///{study_dir / 'optuna.db'}"


def is_journal(url: str) -> bool:
    return "://" not in url and url.endswith(JOURNAL_SUFFIXES)


def mask_url(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db (also ?password=...).

    SQLAlchemy's own parser finds the password (one holding '/' or '@', an empty user name); a URL it
    cannot parse loses everything between '://' and the last '@'."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if "://" in url:
        try:
            url = make_url(url).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):
            url = re.sub(r"://[^?#]*@", "://***@", url)
    return re.sub(r"(?i)((?:password|passwd|pwd)=)[^&;]*", r"\1***", url)


def url_password(url: str) -> str | None:
    """The password a storage URL holds (None if none), to keep it out of argv and records."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password if "://" in url else None
    except Exception:  # noqa: BLE001 - an unparseable URL is refused later, by check_url/open_storage
        return None


def check_url(url: str) -> None:

    if is_journal(url):
        if Path(url).is_dir() or (Path(url).exists() and not os.access(url, os.W_OK)) \
                or not writable_dir(Path(url).parent):
            raise ConfigError(f"--storage {url!r}: the journal file cannot be written there (not a writable "
                              "file in a writable folder)")
        return
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):].split("?", 1)[0])
        if db.is_dir() or not writable_dir(db.parent):
            raise ConfigError(f"--storage {mask_url(url)!r}: the SQLite file cannot be written there")
    if "://" not in url:
        raise ConfigError(f"--storage {mask_url(url)!r}: give an RDB URL (sqlite:///file.db, "
                          "postgresql://user@host/db, mysql+pymysql://...) or a journal file ending in "
                          f"{' or '.join(JOURNAL_SUFFIXES)}")


def _driver(url: str) -> str:
    """SQLAlchemy 2.1 maps postgresql:// to psycopg 3; use psycopg2 (our postgres extra) when that is what exists."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 max_retries: int = 2):
    """The Optuna storage for a URL; heartbeats (and re-queueing of stale trials) on RDB storages."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    check_url(url)
    if is_journal(url):
        try:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(url))
        except OSError as e:

            raise ConfigError(f"--storage {url!r}: cannot open the journal file ({e})") from None
    url = _driver(url)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # Several workers write the same SQLite file: wait for its lock instead of failing at once.
    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    kwargs = {}
    if heartbeat_interval:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            kwargs = dict(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retries))
    for attempt in range(3):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except Exception as e:  # noqa: BLE001
            # Two processes creating the same new database race on its version table: the loser retries.
            if ("IntegrityError" in type(e).__name__ or "already exists" in str(e)) and attempt < 2:
                time.sleep(1 + attempt)
                continue
            error = e
            break

    # unreachable server, unknown driver: say which storage, never the password
    first = str(error).splitlines()[0] if str(error) else ""
    raise ConfigError(f"--storage {mask_url(url)}: cannot open ({type(error).__name__}: {mask_url(first)})") from None
