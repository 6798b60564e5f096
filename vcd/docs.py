"""Regenerate the generated parts of README.md from the registry and the config keys.

    python -m vcd.docs          # rewrite README.md in place
    python -m vcd.docs --check  # exit 1 if README.md is out of date
"""
from __future__ import annotations

import sys
from pathlib import Path

from vcd.config import KEYS, toml_value
from vcd.registry import method_table_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
MARKERS = {
    "methods": method_table_markdown,
    "config": lambda: "\n".join(
        ["| key | default | meaning |", "|---|---|---|"]
        + [f"| `{k.name}` | `{toml_value(k.default) if k.default != '' else '(unset)'}` | {k.doc} |"
           for k in KEYS]),
}


def render(text: str) -> str:
    for name, make in MARKERS.items():
        begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
        head, sep, rest = text.partition(begin)
        if not sep:
            continue
        _, sep2, tail = rest.partition(end)
        if not sep2:
            raise SystemExit(f"README.md: {begin} without {end}")
        text = f"{head}{begin}\n{make()}\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    current = README.read_text()
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print("README.md is out of date: run python -m vcd.docs", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
