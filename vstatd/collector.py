"""One step of vstatd: names from VXDB, one sampling pass, one update per database."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from vcd import vxdb
from vcd.errors import VcdError

from vstatd.sample import Sampler, records
from vstatd.store import Identity, Store

log = logging.getLogger("vcd.vstatd")


@dataclass
class StepResult:
    t: int
    contexts: int = 0
    queued: int = 0         # samples taken into the write queue
    written: int = 0        # samples written to files this step
    cpu_seconds: float = 0.0


class Collector:
    def __init__(self, vxdb_path: Path, sampler: Sampler, store: Store) -> None:
        self.vxdb_path = vxdb_path
        self.sampler = sampler
        self.store = store
        self._db: vxdb.Connection | None = None
        self._vxdb_failing = False

    def close(self) -> None:
        """Write everything pending and let go of VXDB."""
        self.store.flush_all()
        if self._db is not None:
            self._db.close()
            self._db = None

    def vservers(self) -> dict[int, tuple[Identity, str]]:
        """xid -> (identity, name) of every vserver in VXDB, read-only."""
        if self._db is None:
            self._db = vxdb.connect(self.vxdb_path)
        rows = self._db.execute("SELECT xid, name, created FROM vservers").fetchall()
        return {r["xid"]: (Identity(r["xid"], r["created"]), r["name"]) for r in rows}

    def step(self, t: int) -> StepResult:
        cpu0 = time.process_time()
        result = StepResult(t)
        try:
            known = self.vservers()
        except (vxdb.Error, VcdError) as exc:
            # VXDB missing, busy or being migrated: skip this step, not the whole daemon
            if not self._vxdb_failing:  # once per outage, not every step
                log.warning("cannot read VXDB, not sampling until it can be read: %s", exc)
                self._vxdb_failing = True
            if self._db is not None:
                self._db.close()
                self._db = None
            return result
        if self._vxdb_failing:
            log.info("VXDB readable again; sampling")
            self._vxdb_failing = False
        self.store.reconcile({ident: name for ident, name in known.values()})
        for xid, st in self.sampler.sample().items():
            entry = known.get(xid)
            if entry is None:
                continue  # a context vcd does not know (another cgroup user, or mid-create)
            ident, name = entry
            try:
                directory = self.store.claim(name, ident, t)
            except OSError as exc:
                log.error("statistics directory of %s: %s", name, exc)
                continue
            result.queued += self.store.write(directory, t, records(st))
            result.contexts += 1
        result.written = self.store.flush(t)
        result.cpu_seconds = time.process_time() - cpu0
        return result
