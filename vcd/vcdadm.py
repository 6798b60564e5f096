"""vcdadm: local administration (root, talks to the VXDB file directly).

  vcdadm [-c FILE] init                      create (or migrate) VXDB, first users
  vcdadm [-c FILE] passwd USER [--password-stdin]
  vcdadm [-c FILE] template build|list|remove ...
"""
from __future__ import annotations

import argparse
import getpass
import sys

from vcd import auth, config as configmod, dispatch, vxdb
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
    return 0


def cmd_template(config: Config, args: argparse.Namespace) -> int:
    from templates import cli
    rest = list(args.rest)
    if "--templatedir" not in rest:
        rest += ["--templatedir", str(config.templatedir)]
    return cli.main(rest)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcdadm", description="Local administration of vcd.")
    p.add_argument("-c", "--config", help=f"config file (default {configmod.DEFAULT_CONFIG})")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create or migrate VXDB and the first users")
    pw = sub.add_parser("passwd", help="change a user's password")
    pw.add_argument("user")
    pw.add_argument("--password-stdin", action="store_true",
                    help="read the password from standard input instead of the terminal")
    tp = sub.add_parser("template", help="build, list and remove templates", add_help=False)
    tp.add_argument("rest", nargs=argparse.REMAINDER)
    return p


COMMANDS = {"init": cmd_init, "passwd": cmd_passwd, "template": cmd_template}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = _load(args.config)
    except ConfigError as exc:
        print(f"vcdadm: {exc}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](config, args)
    except VcdError as exc:
        print(f"vcdadm: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
