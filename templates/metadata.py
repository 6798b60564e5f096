"""Template metadata: ``<templatedir>/<name>.conf`` in TOML.

Read with the stdlib ``tomllib``; written by a small emitter below because the
values are a closed set of shapes (strings, integers, string lists, a list of
tables) and no TOML writer is among the project's dependencies.
"""

from __future__ import annotations

import math
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libvserver import api as _api
from vcd import vocab as _vocab
from vcd.vocab import DEFAULT_TIMEOUT, UINT64_MAX  # noqa: F401  (part of this module's API)

from .errors import MetadataError

# One vocabulary for the whole project: libvserver's names, the daemon's defaults.
BCAPS = frozenset(_api.BCAPS)
CCAPS = frozenset(_api.CCAPS)
FLAGS = frozenset(_api.FLAGS)
LIMIT_TYPES = frozenset(_api.LIMIT_TYPES)
API_MOUNTS = frozenset(_api.API_MOUNTS)
DEFAULT_BCAPS = list(_vocab.DEFAULT_BCAPS)
DEFAULT_CCAPS = list(_vocab.DEFAULT_CCAPS)
DEFAULT_FLAGS = list(_vocab.DEFAULT_FLAGS)

INF = "inf"

Limit = int | str  # an integer 0..2^64-1 or "inf"


@dataclass
class Mount:
    """One mount made inside the vserver at start (the manual's vxdb.mount row)."""
    src: str
    dst: str
    type: str = "auto"
    opts: str = "defaults"


@dataclass
class LimitSpec:
    type: str
    soft: Limit = INF
    max: Limit = INF


@dataclass
class TemplateMeta:
    name: str
    description: str = ""
    init: str = "/sbin/init"
    halt: str = "/sbin/halt"
    reboot: str = "/sbin/reboot"
    timeout: int = DEFAULT_TIMEOUT
    mounts: list[Mount] = field(default_factory=list)
    bcaps: list[str] = field(default_factory=lambda: list(DEFAULT_BCAPS))
    ccaps: list[str] = field(default_factory=lambda: list(DEFAULT_CCAPS))
    flags: list[str] = field(default_factory=lambda: list(DEFAULT_FLAGS))
    limits: list[LimitSpec] = field(default_factory=list)
    # How a distribution's own init wants to be run (issue 16): signals instead of the
    # halt/reboot commands ("" = run the command), API filesystems mounted before init
    # (names of API_MOUNTS) and its readiness protocol ("" or "notify").
    halt_signal: str = ""
    reboot_signal: str = ""
    api_mounts: list[str] = field(default_factory=list)
    ready: str = ""

    # -- reading -----------------------------------------------------------

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any], source: str = "metadata") -> "TemplateMeta":
        def err(key: str, why: str) -> MetadataError:
            return MetadataError(f"{source}: key {key!r}: {why}")

        known = {"name", "description", "init", "halt", "reboot", "timeout", "mounts", "bcaps",
                 "ccaps", "flags", "limits", "halt_signal", "reboot_signal", "api_mounts",
                 "ready"}
        for key in data:
            if key not in known:
                raise err(key, f"unknown key (known: {', '.join(sorted(known))})")
        meta = cls(name=name)
        if "name" in data and data["name"] != name:
            raise err("name", f"says {data['name']!r} but the file belongs to template {name!r}")
        if "description" in data:
            meta.description = _string(data["description"], "description", err)
        for key in ("init", "halt", "reboot"):
            if key in data:
                value = _string(data[key], key, err)
                if not value.startswith("/"):
                    raise err(key, f"must be an absolute path inside the vserver, got {value!r}")
                setattr(meta, key, value)
        if "timeout" in data:
            t = data["timeout"]
            if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 86400:
                raise err("timeout", f"must be an integer number of seconds 1..86400, got {t!r}")
            meta.timeout = t
        if "mounts" in data:
            meta.mounts = _mounts(data["mounts"], err)
        for key, vocab in (("bcaps", BCAPS), ("ccaps", CCAPS), ("flags", FLAGS)):
            if key in data:
                setattr(meta, key, _names(data[key], key, vocab, err))
        if "limits" in data:
            meta.limits = _limits(data["limits"], err)
        for key in ("halt_signal", "reboot_signal"):
            if key in data:
                value = _string(data[key], key, err)
                if value:
                    try:
                        _vocab.signal_number(value)
                    except ValueError:
                        raise err(key, f"{value!r} is not {_vocab.SIGNAL_FORMS}, "
                                       "nor \"\" (run the command)") from None
                setattr(meta, key, value)
        if "api_mounts" in data:
            meta.api_mounts = _names(data["api_mounts"], "api_mounts", API_MOUNTS, err)
        if "ready" in data:
            value = _string(data["ready"], "ready", err)
            if value not in _vocab.READY_MODES:
                raise err("ready", f"unknown readiness mode {value!r} (known: \"\", \"notify\")")
            meta.ready = value
        return meta

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> "TemplateMeta":
        path = Path(path)
        name = name if name is not None else path.name.removesuffix(".conf")
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise MetadataError(f"{path}: not valid TOML: {e}") from None
        except UnicodeDecodeError as e:
            raise MetadataError(f"{path}: not UTF-8: {e}") from None
        return cls.from_dict(name, data, source=str(path))

    # -- writing -----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "init": self.init,
            "halt": self.halt, "reboot": self.reboot, "timeout": self.timeout,
            "bcaps": list(self.bcaps), "ccaps": list(self.ccaps), "flags": list(self.flags),
            "mounts": [vars(m).copy() for m in self.mounts],
            "limits": [vars(lim).copy() for lim in self.limits],
            "halt_signal": self.halt_signal, "reboot_signal": self.reboot_signal,
            "api_mounts": list(self.api_mounts), "ready": self.ready,
        }

    def dumps(self) -> str:
        d = self.to_dict()
        lines = ["# vcd template metadata (TOML); read by vx.create and vx.templates"]
        for key in ("name", "description", "init", "halt", "reboot", "timeout", "bcaps",
                    "ccaps", "flags", "halt_signal", "reboot_signal", "api_mounts", "ready"):
            lines.append(f"{key} = {_toml_value(d[key])}")
        for table in ("mounts", "limits"):
            for row in d[table]:
                lines.append("")
                lines.append(f"[[{table}]]")
                for k, v in row.items():
                    lines.append(f"{k} = {_toml_value(v)}")
        return "\n".join(lines) + "\n"

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) so a reader never sees half a file."""
        path = Path(path)
        text = self.dumps()
        # Validate what we wrote by reading it back: the emitter must never
        # produce a file the reader rejects.
        TemplateMeta.from_dict(self.name, tomllib.loads(text), source=str(path))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise


def _string(v: Any, key: str, err) -> str:
    if not isinstance(v, str):
        raise err(key, f"must be a string, got {type(v).__name__}")
    if "\x00" in v:
        raise err(key, "must not contain NUL")
    return v


def _names(v: Any, key: str, vocab: frozenset[str], err) -> list[str]:
    if not isinstance(v, list):
        raise err(key, f"must be a list of names, got {type(v).__name__}")
    out: list[str] = []
    for item in v:
        if not isinstance(item, str):
            raise err(key, f"must be a list of names, got item {item!r}")
        if item not in vocab:
            raise err(key, f"unknown value {item!r} (known: {' '.join(sorted(vocab))})")
        if item not in out:
            out.append(item)
    return out


def _mounts(v: Any, err) -> list[Mount]:
    if not isinstance(v, list):
        raise err("mounts", "must be an array of tables [[mounts]]")
    out = []
    for i, row in enumerate(v):
        where = f"mounts[{i}]"
        if not isinstance(row, dict):
            raise err(where, "must be a table with src, dst, type, opts")
        extra = set(row) - {"src", "dst", "type", "opts"}
        if extra:
            raise err(f"{where}.{sorted(extra)[0]}", "unknown key (known: src dst type opts)")
        if "dst" not in row:
            raise err(f"{where}.dst", "missing")
        m = Mount(
            src=_string(row.get("src", "none"), f"{where}.src", err) or "none",
            dst=_string(row["dst"], f"{where}.dst", err),
            type=_string(row.get("type", "auto"), f"{where}.type", err) or "auto",
            opts=_string(row.get("opts", "defaults"), f"{where}.opts", err) or "defaults",
        )
        if not m.dst.startswith("/") or "/../" in m.dst + "/":
            raise err(f"{where}.dst", f"must be an absolute path inside the vserver without '..', got {m.dst!r}")
        out.append(m)
    return out


def _limit_value(v: Any, key: str, err) -> Limit:
    if isinstance(v, bool):
        raise err(key, f"must be a non-negative integer or \"inf\", got {v!r}")
    if isinstance(v, int):
        if not 0 <= v <= UINT64_MAX:
            raise err(key, f"out of range 0..2^64-1: {v}")
        return INF if v == UINT64_MAX else v
    if isinstance(v, float) and math.isinf(v) and v > 0:
        return INF
    if isinstance(v, str):
        if v == INF:
            return INF
        if v.isdigit():
            return _limit_value(int(v), key, err)
    raise err(key, f"must be a non-negative integer or \"inf\", got {v!r}")


def _limits(v: Any, err) -> list[LimitSpec]:
    if not isinstance(v, list):
        raise err("limits", "must be an array of tables [[limits]]")
    out: list[LimitSpec] = []
    seen: set[str] = set()
    for i, row in enumerate(v):
        where = f"limits[{i}]"
        if not isinstance(row, dict):
            raise err(where, "must be a table with type, soft, max")
        extra = set(row) - {"type", "soft", "max"}
        if extra:
            raise err(f"{where}.{sorted(extra)[0]}", "unknown key (known: type soft max)")
        t = row.get("type")
        if t not in LIMIT_TYPES:
            raise err(f"{where}.type", f"unknown limit type {t!r} (known: {' '.join(sorted(LIMIT_TYPES))})")
        if t in seen:
            raise err(f"{where}.type", f"limit {t} given twice")
        seen.add(t)
        soft = _limit_value(row.get("soft", INF), f"{where}.soft", err)
        mx = _limit_value(row.get("max", INF), f"{where}.max", err)
        if soft != INF and mx != INF and soft > mx:
            raise err(f"{where}.soft", f"soft limit {soft} exceeds max {mx}")
        if soft == INF and mx != INF:
            raise err(f"{where}.soft", f"soft limit inf exceeds max {mx}")
        out.append(LimitSpec(type=t, soft=soft, max=mx))
    return out


def _toml_string(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        # TOML integers are signed 64-bit; larger limits are written as strings.
        return str(v) if v <= 2**63 - 1 else _toml_string(str(v))
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")
