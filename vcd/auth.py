"""Authentication: WHIRLPOOL password hashes, users and capabilities, login throttling."""
from __future__ import annotations

import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import whirlpool

from vcd.errors import Fault, MustWait, VcdError
from vcd.vxdb import Connection

HASH_PREFIX = "WHIRLPOOLENC//"

# Past THROTTLE_AFTER failures from one address within THROTTLE_WINDOW seconds, that
# address is refused for a penalty that doubles with each further failure, capped.
# Refusing (instead of sleeping in the worker) keeps a flood from one address from
# tying up the workers that serve everybody else.
THROTTLE_AFTER = 10
THROTTLE_WINDOW = 60.0
THROTTLE_CAP = 60.0

# compared against when the user does not exist, so both cases cost the same
_DUMMY_HASH = "0" * 128


class Throttled(VcdError):
    """A login refused, unchecked, because its address failed too often: nothing was
    tried, so it is not audited (a flood would only grow the audit log)."""


def hash_password(password: str) -> str:
    """WHIRLPOOL of the UTF-8 password as 128 uppercase hex digits."""
    return whirlpool.new(password.encode("utf-8")).hexdigest().upper()


def given_hash(password: str) -> str:
    """The hash to compare for a password as a client sent it."""
    if password.startswith(HASH_PREFIX):
        return password[len(HASH_PREFIX):].upper()
    return hash_password(password)


def random_password() -> str:
    return secrets.token_urlsafe(18)


@dataclass(frozen=True)
class User:
    uid: int
    username: str
    admin: bool
    caps: frozenset[str]


def write_password_file(path: Path, password: str) -> None:
    """A first-start password file (`<datadir>/<user>.password`): mode 0600 from its
    creation, replaced whole (a reader never sees half a password)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_user(conn: Connection, username: str) -> tuple[User, str] | None:
    # one query on every request's path: the user and its capabilities together
    row = conn.execute(
        "SELECT u.uid, u.username, u.password, u.admin, group_concat(c.cap) AS caps "
        "FROM users u LEFT JOIN user_caps c ON c.uid = u.uid WHERE u.username = ? "
        "GROUP BY u.uid", (username,)).fetchone()
    if row is None:
        return None
    caps = frozenset(row["caps"].split(",")) if row["caps"] else frozenset()
    return User(row["uid"], row["username"], bool(row["admin"]), caps), row["password"]


def penalty(count: int) -> float:
    if count < THROTTLE_AFTER:
        return 0.0
    return min(2.0 ** (count - THROTTLE_AFTER), THROTTLE_CAP)


class Authenticator:
    """Checks credentials against VXDB; one per worker."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def check(self, username: str, password: str, peer: str, quick: bool = False) -> User:
        """The user, or MEAUTH. Unknown user and wrong password look the same.
        `quick` (on a worker's event loop): MustWait instead of writing VXDB, whose
        write lock may be held for long, to record or clear failed logins."""
        now = time.time()
        failed = self.conn.execute("SELECT count, last FROM login_failures WHERE addr = ?",
                                   (peer,)).fetchone()
        if failed is not None:
            wait = failed["last"] + penalty(failed["count"]) - now
            if wait > 0:
                # not counted: a refused attempt was never checked, so waiting it out works
                raise Throttled(Fault.MEAUTH, f"too many failed logins from {peer}, "
                                              f"retry in {wait:.0f} s")
        found = load_user(self.conn, username) if username else None
        stored = found[1] if found else _DUMMY_HASH
        ok = hmac.compare_digest(given_hash(password).encode(), stored.encode())
        if (not (ok and found) or failed is not None) and quick:
            raise MustWait()
        if not (ok and found):
            self._record_failure(peer, now)
            raise VcdError(Fault.MEAUTH)
        if failed is not None:
            self.conn.execute("DELETE FROM login_failures WHERE addr = ?", (peer,))
        return found[0]

    def _record_failure(self, peer: str, now: float) -> None:
        # an old run of failures outside the window starts over
        self.conn.execute(
            """INSERT INTO login_failures (addr, count, first, last) VALUES (?, 1, ?, ?)
               ON CONFLICT (addr) DO UPDATE SET
                 count = CASE WHEN ? - first > ? AND count < ? THEN 1 ELSE count + 1 END,
                 first = CASE WHEN ? - first > ? AND count < ? THEN ? ELSE first END,
                 last = ?""",
            (peer, now, now, now, THROTTLE_WINDOW, THROTTLE_AFTER,
             now, THROTTLE_WINDOW, THROTTLE_AFTER, now, now))


def create_user(conn: Connection, username: str, password: str, *, admin: bool,
                caps: tuple[str, ...] | frozenset[str]) -> int:
    cur = conn.execute("INSERT INTO users (username, password, admin) VALUES (?, ?, ?)",
                       (username, hash_password(password), int(admin)))
    uid = cur.lastrowid
    conn.executemany("INSERT INTO user_caps (uid, cap) VALUES (?, ?)",
                     [(uid, cap) for cap in sorted(caps)])
    return uid
