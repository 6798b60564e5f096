"""`make run`'s first step: directories, VXDB and a busybox template, so a newcomer
can create a vserver at once."""
from __future__ import annotations

import argparse
import sys

from vcd import config as configmod, dispatch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vcd.firstrun")
    p.add_argument("-c", "--config")
    args = p.parse_args(argv)
    try:
        config = configmod.load(args.config)
    except configmod.ConfigError as exc:
        print(f"vcd: {exc}", file=sys.stderr)
        return 2
    for d in (config.templatedir, config.vbasedir):
        d.mkdir(parents=True, exist_ok=True, mode=0o755)
    dispatch.prepare(config)
    from templates import busybox
    from templates.store import TemplateStore
    store = TemplateStore(config.templatedir)
    if not any(t.name == "busybox" for t in store.list()):
        path = busybox.build("busybox", config.templatedir)
        print(f"built template busybox: {path}")
    print(f"admin password: {config.password_file('admin')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
