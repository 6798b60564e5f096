"""vshelper ACTION XID: tell vcd what happened to a context (the kernel helper).

On a Linux-VServer kernel /proc/sys/kernel/vshelper points here; on a stock kernel
libvserver's supervisor runs it when a context's init ends. It logs in as the
`vshelper` user (password file from the config) and calls the matching helper.*.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
import xmlrpc.client
from pathlib import Path

from vcd import config as configmod
from vcd.config import Config, ConfigError
from vcd.errors import Fault
from vcd.transport import server_proxy

# action -> helper method; the reboot(2) actions other than restart need no record:
# the `shutdown` the kernel (or supervisor) sends next does the work.
ACTIONS: dict[str, str | None] = {
    "restart": "helper.restart", "halt": None, "poweroff": None, "swsusp": None,
    "startup": "helper.startup", "shutdown": "helper.shutdown", "netup": "helper.netup",
    "netdown": None,
}
RETRY_FOR = 30.0   # vcd may be restarting right now


def url_of(config: Config) -> str:
    section = config.sections.get("vshelper", {})
    if section.get("url"):
        return str(section["url"])
    if config.unix_socket is not None:
        # local, so no TCP needed (nor TLS, nor a client certificate)
        return f"unix://{config.unix_socket}"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.host, config.host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.tls_cert is not None else "http"
    return f"{scheme}://{host}:{config.port}/RPC2"


def cacert_of(config: Config) -> str | None:
    """The CA for an https:// URL: [vshelper] cacert, else vcd's own (self-signed) certificate."""
    section = config.sections.get("vshelper", {})
    if section.get("cacert"):
        return str(section["cacert"])
    if url_of(config).startswith("https:") and config.tls_cert is not None:
        return str(config.tls_cert)
    return None


def password_of(config: Config) -> str:
    section = config.sections.get("vshelper", {})
    path = Path(section.get("password_file") or config.password_file("vshelper"))
    return path.read_text().strip()


def call(config: Config, method: str, xid: int) -> None:
    auth = {"username": str(config.sections.get("vshelper", {}).get("username", "vshelper")),
            "password": password_of(config)}
    deadline = time.monotonic() + RETRY_FOR
    while True:
        proxy = server_proxy(url_of(config), cacert=cacert_of(config), timeout=RETRY_FOR)
        try:
            getattr(proxy, method)(auth, {"xid": xid})
            return
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Fault.MEBUSY or time.monotonic() > deadline:
                raise
        except (ConnectionError, socket.timeout, OSError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vshelper", description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", help=f"vcd config (default {configmod.DEFAULT_CONFIG})")
    p.add_argument("action", choices=sorted(ACTIONS))
    p.add_argument("xid", type=int)
    args = p.parse_args(argv)
    try:
        path = args.config or (str(configmod.DEFAULT_CONFIG)
                               if configmod.DEFAULT_CONFIG.exists() else None)
        config = configmod.load(path)
    except ConfigError as exc:
        print(f"vshelper: {exc}", file=sys.stderr)
        return 2
    method = ACTIONS[args.action]
    if method is None:
        return 0
    try:
        call(config, method, args.xid)
    except xmlrpc.client.Fault as fault:
        print(f"vshelper: {method}({args.xid}): {fault.faultString} ({fault.faultCode})",
              file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"vshelper: cannot reach vcd at {url_of(config)}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
