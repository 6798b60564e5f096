"""VXDB schema: numbered migrations, applied in order, version in PRAGMA user_version.

Vocabulary checks live in the schema too (CHECK constraints), so a row that the
validators would refuse can't get in through `vcdadm` or a future code path either.
"""
from __future__ import annotations

from vcd import vocab


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ",".join("'" + v + "'" for v in values)
    return f"CHECK ({column} IN ({quoted}))"


_VX = "xid INTEGER NOT NULL REFERENCES vservers(xid) ON DELETE CASCADE"

MIGRATIONS: tuple[str, ...] = (
    # 1: the manual's areas, users, groups, restart requests, daemon statistics
    f"""
    CREATE TABLE users (
        uid      INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 64),
        password TEXT NOT NULL CHECK (length(password) = 128),
        admin    INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1))
    );
    CREATE TABLE user_caps (
        uid INTEGER NOT NULL REFERENCES users(uid) ON DELETE CASCADE,
        cap TEXT NOT NULL {_in('cap', vocab.USER_CAPS)},
        PRIMARY KEY (uid, cap)
    ) WITHOUT ROWID;
    CREATE TABLE vservers (
        xid  INTEGER PRIMARY KEY CHECK (xid BETWEEN 2 AND 65534),
        name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
        vdir TEXT NOT NULL CHECK (substr(vdir, 1, 1) = '/'),
        template TEXT,
        shared INTEGER NOT NULL DEFAULT 0 CHECK (shared IN (0, 1)),
        created INTEGER NOT NULL DEFAULT (strftime('%s', 'now'))
    );
    CREATE TABLE owners (
        {_VX},
        uid INTEGER NOT NULL REFERENCES users(uid) ON DELETE CASCADE,
        PRIMARY KEY (xid, uid)
    ) WITHOUT ROWID;
    CREATE INDEX owners_uid ON owners(uid);
    CREATE TABLE dx_limit (
        {_VX} PRIMARY KEY,
        space    INTEGER NOT NULL CHECK (space >= 0),
        inodes   INTEGER NOT NULL CHECK (inodes >= 0),
        reserved INTEGER NOT NULL CHECK (reserved BETWEEN 0 AND 100)
    );
    CREATE TABLE init (
        {_VX} PRIMARY KEY,
        init    TEXT NOT NULL,
        halt    TEXT NOT NULL,
        reboot  TEXT NOT NULL,
        timeout INTEGER NOT NULL CHECK (timeout BETWEEN 0 AND 86400)
    );
    CREATE TABLE mount (
        {_VX},
        dst  TEXT NOT NULL CHECK (substr(dst, 1, 1) = '/'),
        src  TEXT NOT NULL,
        type TEXT NOT NULL,
        opts TEXT NOT NULL,
        PRIMARY KEY (xid, dst)
    ) WITHOUT ROWID;
    CREATE TABLE nx_addr (
        {_VX},
        addr    TEXT NOT NULL,
        netmask TEXT NOT NULL,
        PRIMARY KEY (xid, addr)
    ) WITHOUT ROWID;
    CREATE TABLE nx_broadcast (
        {_VX} PRIMARY KEY,
        broadcast TEXT NOT NULL
    );
    CREATE TABLE vx_bcaps (
        {_VX}, bcap TEXT NOT NULL {_in('bcap', vocab.BCAPS)}, PRIMARY KEY (xid, bcap)
    ) WITHOUT ROWID;
    CREATE TABLE vx_ccaps (
        {_VX}, ccap TEXT NOT NULL {_in('ccap', vocab.CCAPS)}, PRIMARY KEY (xid, ccap)
    ) WITHOUT ROWID;
    CREATE TABLE vx_flags (
        {_VX}, flag TEXT NOT NULL {_in('flag', vocab.FLAGS)}, PRIMARY KEY (xid, flag)
    ) WITHOUT ROWID;
    -- 64-bit limits are decimal text ('inf' = unlimited): SQLite integers stop at 2^63-1
    CREATE TABLE vx_limit (
        {_VX},
        type TEXT NOT NULL {_in('type', vocab.LIMITS)},
        soft TEXT NOT NULL CHECK (soft = 'inf' OR (soft GLOB '[0-9]*' AND NOT soft GLOB '*[^0-9]*')),
        max  TEXT NOT NULL CHECK (max = 'inf' OR (max GLOB '[0-9]*' AND NOT max GLOB '*[^0-9]*')),
        PRIMARY KEY (xid, type)
    ) WITHOUT ROWID;
    CREATE TABLE vx_sched (
        {_VX},
        cpuid     INTEGER NOT NULL CHECK (cpuid >= 0),
        interval  INTEGER NOT NULL,
        fillrate  INTEGER NOT NULL,
        interval2 INTEGER NOT NULL,
        fillrate2 INTEGER NOT NULL,
        tokensmin INTEGER NOT NULL,
        tokensmax INTEGER NOT NULL,
        PRIMARY KEY (xid, cpuid)
    ) WITHOUT ROWID;
    CREATE TABLE vx_uname (
        {_VX},
        type  TEXT NOT NULL {_in('type', vocab.UNAMES)},
        value TEXT NOT NULL CHECK (length(value) <= 64),
        PRIMARY KEY (xid, type)
    ) WITHOUT ROWID;
    CREATE TABLE vx_cpuset (
        {_VX} PRIMARY KEY,
        cpus TEXT NOT NULL,
        mems TEXT NOT NULL,
        virtualize INTEGER NOT NULL CHECK (virtualize IN (0, 1))
    );
    CREATE TABLE groups (
        gid  INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64)
    );
    CREATE TABLE group_members (
        gid INTEGER NOT NULL REFERENCES groups(gid) ON DELETE CASCADE,
        {_VX},
        PRIMARY KEY (gid, xid)
    ) WITHOUT ROWID;
    CREATE TABLE restart (
        {_VX} PRIMARY KEY,
        requested INTEGER NOT NULL DEFAULT (strftime('%s', 'now'))
    );
    CREATE TABLE stats (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    INSERT INTO stats (key, value) VALUES
        ('requests', 0), ('flogins', 0), ('nomethod', 0), ('started', 0);
    -- per source address, shared by all workers: throttles password guessing
    CREATE TABLE login_failures (
        addr  TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        first REAL NOT NULL,
        last  REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2: admin-only security settings per vserver; one vserver per IPv4 address
    f"""
    -- privileged: no user namespace (root inside is root outside); seccomp: the default
    -- filter. No row = the defaults (0, 1). Only admins set them (vxdb.vx.security.set).
    CREATE TABLE vx_security (
        {_VX} PRIMARY KEY,
        privileged INTEGER NOT NULL DEFAULT 0 CHECK (privileged IN (0, 1)),
        seccomp    INTEGER NOT NULL DEFAULT 1 CHECK (seccomp IN (0, 1))
    );
    -- Older VXDBs may hold one address for several vservers (the second start failed
    -- with "File exists"). The lowest xid keeps it; the other rows move here, so the
    -- migration never fails and nothing is lost: an admin reads them with sqlite3 and
    -- gives those vservers new addresses. They go with their vserver.
    CREATE TABLE nx_addr_displaced (
        {_VX},
        addr    TEXT NOT NULL,
        netmask TEXT NOT NULL,
        moved   INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
        PRIMARY KEY (xid, addr)
    ) WITHOUT ROWID;
    INSERT INTO nx_addr_displaced (xid, addr, netmask)
        SELECT a.xid, a.addr, a.netmask FROM nx_addr a
        WHERE a.xid > (SELECT min(b.xid) FROM nx_addr b WHERE b.addr = a.addr);
    DELETE FROM nx_addr
        WHERE xid > (SELECT min(b.xid) FROM nx_addr b WHERE b.addr = nx_addr.addr);
    CREATE UNIQUE INDEX nx_addr_addr ON nx_addr(addr);
    -- 2^64-1 was documented as unlimited but stored as a number (and failed at start)
    UPDATE vx_limit SET soft = 'inf' WHERE soft = '18446744073709551615';
    UPDATE vx_limit SET max = 'inf' WHERE max = '18446744073709551615';
    """,
    # 3: init signals (vxdb.init halt_signal, reboot_signal) and how a template's init
    # wants to be run (API filesystems, readiness), issue 16
    f"""
    ALTER TABLE init ADD COLUMN halt_signal TEXT NOT NULL DEFAULT ''
        CHECK (halt_signal = '' OR halt_signal GLOB 'SIG[A-Z]*');
    ALTER TABLE init ADD COLUMN reboot_signal TEXT NOT NULL DEFAULT ''
        CHECK (reboot_signal = '' OR reboot_signal GLOB 'SIG[A-Z]*');
    -- api_mounts: names of libvserver.api.API_MOUNTS, space-separated; ready: READY_MODES
    CREATE TABLE vx_boot (
        {_VX} PRIMARY KEY,
        api_mounts TEXT NOT NULL DEFAULT '',
        ready      TEXT NOT NULL DEFAULT '' {_in('ready', vocab.READY_MODES)}
    );
    """,
)

VERSION = len(MIGRATIONS)
