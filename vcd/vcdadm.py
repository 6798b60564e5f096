"""vcdadm: administration of vcd.

Over XML-RPC (any host; -c is the client config, as for vcc): every vcd.* method as
a command - hostinfo, status, whoami, user.set USER ADMIN [PASSWORD], user.get [USER],
user.remove USER, user.caps.add USER CAP, user.caps.get USER, user.caps.remove USER [CAP].

Locally, as root on the daemon's host (-c is the daemon's config, default
/etc/vcd/vcd.conf; these open the VXDB file directly):
  vcdadm [-c FILE] init                      create (or migrate) VXDB, first users
  vcdadm [-c FILE] passwd USER [--password-stdin]
  vcdadm [-c FILE] template build|unpack|list|remove ...
"""
from __future__ import annotations

import argparse
import getpass
import sys
from typing import Callable

from vcd import auth, config as configmod, dispatch, vxdb
from vcd.clients import common
from vcd.clients.commands import Local, Program, Spec, collect, confirmation, derived
from vcd.clients.common import Client
from vcd.clients.output import Output
from vcd.config import Config, ConfigError
from vcd.methods.vcd import MIN_PASSWORD
from vcd.params import UserName
from vcd.errors import VcdError


def _load(path: str | None) -> Config:
    if path is None and configmod.DEFAULT_CONFIG.exists():
        path = str(configmod.DEFAULT_CONFIG)
    return configmod.load(path)


def cmd_init(config: Config, args: argparse.Namespace) -> int:
    config.datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = vxdb.connect(config.vxdb_path, create=True)
    try:
        before = vxdb.migrate(conn)
        dispatch.create_first_users(conn, config)
    finally:
        conn.close()
    print(f"VXDB {config.vxdb_path} ready (schema {before} -> {vxdb.schema.VERSION})")
    for username, _, _ in dispatch.FIRST_USERS:
        path = config.password_file(username)
        if path.exists():
            print(f"password of {username}: {path}")
    return 0


def read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise SystemExit("vcdadm: passwords do not match")
    if len(password) < MIN_PASSWORD:
        raise SystemExit(f"vcdadm: a password needs at least {MIN_PASSWORD} characters")
    return password


def cmd_passwd(config: Config, args: argparse.Namespace) -> int:
    try:
        UserName.convert("username", args.user)
    except VcdError as exc:
        raise SystemExit(f"vcdadm: {exc}") from None
    conn = vxdb.connect(config.vxdb_path)
    try:
        with vxdb.transaction(conn, immediate=True):
            row = conn.execute("SELECT uid FROM users WHERE username = ?", (args.user,)).fetchone()
            if row is None:
                raise SystemExit(f"vcdadm: no such user: {args.user}")
            password = read_password(args)
            conn.execute("UPDATE users SET password = ? WHERE uid = ?",
                         (auth.hash_password(password), row[0]))
    finally:
        conn.close()
    print(f"password of {args.user} changed")
    # the first-start file is where the README, vshelper and a client's password_file
    # read this user's password: a stale one there would lock them out
    path = config.password_file(args.user)
    if path.is_file():
        auth.write_password_file(path, password)
        print(f"{path} now holds the new password")
    return 0


def cmd_template(config: Config, args: argparse.Namespace) -> int:
    from templates import cli
    rest = list(args.rest)
    if "--templatedir" not in rest:
        rest += ["--templatedir", str(config.templatedir)]
    return cli.main(rest)


def cmd_tls(config: Config, args: argparse.Namespace) -> int:
    from vcd import tls
    rest = list(args.rest)
    usage = ("usage: vcdadm [-c vcd.conf] tls init [--cert PATH] [--key PATH] "
             "[--name HOST ...] [--days N] [--force]")
    if rest[:1] in (["-h"], ["--help"]) or rest[:2] in (["init", "-h"], ["init", "--help"]):
        # the usage line alone left a person guessing what each option does
        return tls.main(["--help"])
    if not rest or rest[0] != "init":
        print(f"vcdadm: {usage}", file=sys.stderr)
        return common.USAGE
    if args.config and "-c" not in rest and "--config" not in rest:
        rest += ["-c", args.config]
    return tls.main(rest[1:])


def _local(command: str, help_text: str, usage: str,
           setup: Callable[[argparse.ArgumentParser], None],
           func: Callable[[Config, argparse.Namespace], int], own_help: bool = False) -> Local:
    def run(client: Client | None, ns: argparse.Namespace, out: Output) -> int:
        try:
            config = _load(ns.config)
        except ConfigError as exc:
            print(f"vcdadm: {exc}", file=sys.stderr)
            return common.USAGE
        try:
            return func(config, ns)
        except VcdError as exc:
            print(f"vcdadm: {exc}", file=sys.stderr)
            return common.ERROR
    return Local(command, help_text, setup, run, usage=usage, needs_client=False,
                 own_help=own_help)


def _passwd_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("user", metavar="USER",
                   help="the user (admin, vshelper or one made with user.set); its "
                        "first-start password file in datadir, if there, is updated too")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input instead of the terminal")


def _template_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs=argparse.REMAINDER)


def _user_set(spec: Spec, client: Client, ns: argparse.Namespace, out: Output) -> int:
    """The original's `user.set USER ADMIN [PASSWORD]`; `-` reads the password from
    standard input, which keeps it out of `ps` and shell history."""
    if ns.password == "-":
        ns.password = sys.stdin.readline().rstrip("\r\n")
    elif ns.password:
        print("vcdadm: warning: a password on the command line is visible to other users "
              "(use '-' to read it from standard input)", file=sys.stderr)
    values = collect(spec, ns)
    out.result(client.call(spec.method, values))
    out.done(confirmation(spec, values))
    return common.OK


OVERRIDES = (
    Spec("status", "vcd.status"),
    Spec("user.set", "vcd.user.set", order=("username", "admin", "password?"), run=_user_set),
)

LOCALS = (
    _local("init", "create or migrate VXDB and the first users (local, root)", "",
           lambda p: None, cmd_init),
    _local("passwd", "change a user's password in VXDB (local, root)",
           "USER [--password-stdin]", _passwd_args, cmd_passwd),
    _local("template", "build, unpack, list and remove templates (local)",
           "build|unpack|list|remove ...",
           _template_args, cmd_template, own_help=True),
    _local("tls", "make a self-signed certificate and key for HTTPS (local, root)",
           "init [--cert PATH] [--key PATH] [--name HOST ...] [--days N] [--force]",
           _template_args, cmd_tls, own_help=True),
)

PROGRAM = Program("vcdadm", "Administration of vcd: users, daemon status (over XML-RPC); "
                            "VXDB set-up, passwords and templates (locally, -c = vcd.conf).",
                  derived("vcd.", OVERRIDES), LOCALS)


def main(argv: list[str] | None = None) -> int:
    return PROGRAM.main(argv)


if __name__ == "__main__":
    sys.exit(main())
