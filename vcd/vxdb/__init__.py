"""VXDB: the SQLite configuration database.

One connection per worker process, opened after fork. Every method runs in one
transaction (`transaction()`), every statement is parameterised.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:  # a current SQLite from the wheel; the stdlib module where no wheel exists
    from pysqlite3 import dbapi2 as sqlite3  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the platform
    import sqlite3  # type: ignore[no-redef]

from vcd.errors import Fault, VcdError
from vcd.vxdb import schema

Error = sqlite3.Error
IntegrityError = sqlite3.IntegrityError
Connection = sqlite3.Connection
Row = sqlite3.Row

BUSY_TIMEOUT_MS = 15000


def connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    """Open VXDB with the settings every user of it needs."""
    path = Path(path)
    if not create and not path.exists():
        raise VcdError(Fault.MEVXDB, f"{path} does not exist (run 'vcdadm init')")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # create the file with a safe mode before SQLite does with the umask's
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so one method = one transaction
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000,
                           isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: an acknowledged write survives a power cut, not only a crash of vcd
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the current version; returns the version found before."""
    with transaction(conn, immediate=True):
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > schema.VERSION:
            raise VcdError(Fault.MEVXDB,
                           f"VXDB schema version {found} is newer than this vcd ({schema.VERSION})")
        for version in range(found, schema.VERSION):
            for statement in _split(schema.MIGRATIONS[version]):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {schema.VERSION}")
    return found


def _split(script: str) -> Iterator[str]:
    # executescript() would COMMIT our transaction; run the statements one by one
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                yield buf.strip()
            buf = ""
    if buf.strip():
        yield buf.strip()


@contextmanager
def transaction(conn: sqlite3.Connection, *, immediate: bool = False) -> Iterator[sqlite3.Connection]:
    """One transaction; rolled back on any exception.

    `immediate` takes the write lock up front, so two writers queue on busy_timeout
    instead of one failing with SQLITE_BUSY when it upgrades a read lock.
    """
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")
