"""The clients' own settings: a TOML file, the command line, the environment.

    host = "127.0.0.1"      # or url = "https://vcd.example:13386/RPC2" / "unix:///run/vcd/vcd.sock"
    port = 13386
    user = "admin"
    password_file = "/var/lib/vcd/admin.password"       # or password = "..."
    cacert = "/etc/vcd/ca.pem"                           # https:// only

Where nothing names the daemon (no URL, host or port on the command line or in the
file), the local Unix socket is used when it exists ($VCD_SOCKET, else
/run/vcd/vcd.sock), as Incus clients do; there a trusted local user (root) needs no
password. Otherwise the password comes from the file, then $VCD_PASSWORD, then a
prompt without echo; there is deliberately no option for it, so it never shows up in
`ps` or shell history.
"""
from __future__ import annotations

import getpass
import os
import stat
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcd.clients.transport import TLSOptions, url_for

DEFAULT_FILES = (Path("~/.config/vcd/vcc.conf"), Path("/etc/vcd/vcc.conf"))
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 13386
DEFAULT_USER = "admin"
PASSWORD_ENV = "VCD_PASSWORD"
SOCKET_ENV = "VCD_SOCKET"
DEFAULT_SOCKET = Path("/run/vcd/vcd.sock")
# where `make run` (vcd.conf.example) and a default install keep the first-start passwords
DEFAULT_DATADIR = Path("/var/lib/vcd")

KEYS: dict[str, type | tuple[type, ...]] = {
    "host": str, "port": int, "url": str, "user": str, "username": str, "password": str,
    "password_file": str, "cacert": str, "cert": str, "key": str, "timeout": (int, float),
    "vcd_config": str,
}


class SettingsError(Exception):
    """A config file or option that cannot be used (exit status: usage)."""


@dataclass
class Settings:
    url: str
    user: str
    tls: TLSOptions = TLSOptions()
    timeout: float = 300.0
    vcd_config: str | None = None      # the daemon's config, for `vcc login` on its host
    source: Path | None = None
    _file_password: str | None = field(default=None, repr=False)
    _file_user: str | None = None
    user_named: bool = False           # -u or the file named the user
    password_source: str = ""          # file, env or prompt: where password() found it

    @property
    def local_socket(self) -> bool:
        return self.url.lower().startswith("unix:")

    def without_password(self) -> bool:
        """Try the call with no credentials first: on the local socket, with no user
        named and no password at hand, the daemon may trust our uid (local root)."""
        return self.local_socket and not self.user_named and self._file_password is None \
            and not os.environ.get(PASSWORD_ENV)

    def _where(self) -> str:
        if self.user != DEFAULT_USER:
            return f"the password of {self.user} is the one its admin set"
        return ("the first start of vcd wrote admin's password to "
                f"{DEFAULT_DATADIR / 'admin.password'} (datadir) on the daemon's host")

    def password_hint(self) -> str:
        """Where a person finds the password, shown before the prompt."""
        return (f"No password for {self.user} at {self.url} in a client config or "
                f"${PASSWORD_ENV}; {self._where()}. To skip this prompt, put "
                "password_file = \"...\" in ~/.config/vcd/vcc.conf.")

    def refused_hint(self) -> str:
        """What a person checks when the daemon refused the password we sent (fault 100)."""
        came = {"file": f"password or password_file of {self.source}",
                "env": f"${PASSWORD_ENV}", "prompt": "the prompt"}.get(self.password_source, "")
        text = f"{self.url} refused user {self.user}"
        if came:
            text += f" with the password from {came}"
        return f"{text}; {self._where()}"

    def password(self, interactive: bool = True) -> str:
        # a password from the file belongs to the file's user, not to a `-u` override
        if self._file_password is not None and self.user == self._file_user:
            self.password_source = "file"
            return self._file_password
        env = os.environ.get(PASSWORD_ENV)
        if env:
            self.password_source = "env"
            return env
        if not interactive:
            raise SettingsError(f"no password for {self.user} at {self.url}: set password_file "
                                f"in a client config, or ${PASSWORD_ENV}; {self._where()}")
        print(self.password_hint(), file=sys.stderr)
        self.password_source = "prompt"
        try:
            return getpass.getpass(f"Password for {self.user}: ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            raise SettingsError("no password given") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    for key, value in data.items():
        if key not in KEYS:
            raise SettingsError(f"{path}: unknown key '{key}' (known: {', '.join(KEYS)})")
        if isinstance(value, bool) or not isinstance(value, KEYS[key]):
            raise SettingsError(f"{path}: '{key}' has the wrong type")
    return data


def find_file(explicit: str | None) -> Path | None:
    if explicit is not None:
        return Path(explicit)
    for candidate in DEFAULT_FILES:
        path = candidate.expanduser()
        if path.is_file():
            return path
    return None


def _file_password(data: dict[str, Any], source: Path) -> str | None:
    if "password" in data:
        return data["password"]
    if "password_file" in data:
        path = Path(data["password_file"]).expanduser()
        if not path.is_absolute():
            path = source.parent / path
        try:
            return path.read_text().strip("\r\n")
        except OSError as exc:
            raise SettingsError(f"{source}: password_file {path}: {exc.strerror}") from None
    return None


def load(config: str | None = None, host: str | None = None, port: int | None = None,
         user: str | None = None, url: str | None = None, cacert: str | None = None) -> Settings:
    """Settings from the command line over the config file over the defaults."""
    source = find_file(config)
    data = _read_toml(source) if source is not None else {}
    file_user = data.get("user", data.get("username"))
    if url is None and host is None and port is None:
        url = data.get("url")
        if url is None and "host" not in data and "port" not in data:
            url = local_socket_url()
    if url is None:
        url = url_for(host or data.get("host", DEFAULT_HOST), port or data.get("port", DEFAULT_PORT))
    tls = TLSOptions(cacert=cacert or data.get("cacert"), cert=data.get("cert"),
                     key=data.get("key"))
    return Settings(url=url, user=user or file_user or DEFAULT_USER, tls=tls,
                    timeout=float(data.get("timeout", 300.0)), vcd_config=data.get("vcd_config"),
                    source=source,
                    _file_password=_file_password(data, source) if source else None,
                    _file_user=file_user or DEFAULT_USER, user_named=bool(user or file_user))


def local_socket_url() -> str | None:
    """unix:// of the local daemon's socket ($VCD_SOCKET, else the default) if it is there."""
    path = Path(os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)
    try:
        if stat.S_ISSOCK(path.stat().st_mode):
            return f"unix://{path}"
    except OSError:
        pass
    return None
