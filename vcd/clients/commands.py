"""Subcommands derived from the method registry.

A `Spec` names a CLI command and the method it calls; its positional arguments are
the method's declared params in order, with their types, defaults and docs. Only
where the original C clients ordered arguments differently does a Spec carry an
`order` (e.g. `vce mount.set NAME SRC DST` while the method declares dst first).
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from vcd.clients import common
from vcd.clients.common import Client, ClientError
from vcd.clients.output import Output
from vcd.clients.settings import SettingsError, load as load_settings
from vcd.errors import Fault, VcdError
from vcd.params import Bool, Choice, Param, Signal, SignalName
from vcd.registry import Method, load_all

Show = Callable[[Any, argparse.Namespace, Output], None]
Run = Callable[[Client | None, argparse.Namespace, Output], int]   # None: needs_client=False
SpecRun = Callable[["Spec", Client, argparse.Namespace, Output], int]


@dataclass(frozen=True)
class Spec:
    command: str                         # the CLI name
    method: str                          # the XML-RPC method it calls
    order: tuple[str, ...] = ()          # CLI positional order where the original differs;
                                         # "x?" marks an optional one
    fill: dict[str, str] = field(default_factory=dict)  # absent param -> another's value
    rest: str | None = None              # takes every remaining word (vcc exec CMD ARGS...)
    options: tuple[str, ...] = ()        # params given as --option instead of positionally
    show: Show | None = None             # how people see the result (default: by its shape)
    setup: Callable[[argparse.ArgumentParser], None] | None = None   # extra CLI-only options
    fallback: tuple[Param, ...] = ()     # params when the local registry lacks the method
    run: SpecRun | None = None           # more than one call (vcc list)
    usage: str = ""                      # CLI-only options for the usage line (-o FILE)
    doc: str = ""                        # what the command does, where not the method's doc


@dataclass(frozen=True)
class Arg:
    param: Param
    required: bool
    option: bool = False
    rest: bool = False


@dataclass(frozen=True)
class Local:
    """A command that is not a method call (vcc login, completion, vcdadm init)."""
    command: str
    help: str
    setup: Callable[[argparse.ArgumentParser], None]
    run: Run
    usage: str = ""             # its arguments, for the command list
    needs_client: bool = True   # False: runs without the client config (vcdadm init)
    own_help: bool = False      # passes --help on (vcdadm template)


def method_of(spec: Spec) -> Method | None:
    return load_all().get(spec.method)


def params_of(spec: Spec) -> tuple[Param, ...]:
    method = method_of(spec)
    return method.params if method is not None else spec.fallback


def arguments(spec: Spec) -> list[Arg]:
    """The positional (and --option) arguments of a command, from the method's params."""
    params = {p.name: p for p in params_of(spec)}
    if spec.order:
        names = [(n.rstrip("?"), not n.endswith("?")) for n in spec.order]
        unknown = [n for n, _ in names if n not in params]
        if unknown:
            raise ValueError(f"{spec.command}: {spec.method} has no param {unknown}")
    else:
        names = [(p.name, p.required) for p in params.values() if p.name not in spec.options]
    args = [Arg(params[n], req, rest=(n == spec.rest)) for n, req in names]
    args += [Arg(params[n], False, option=True) for n in spec.options if n in params]
    seen_optional = False
    for a in args:
        if a.option:
            continue
        if a.required and seen_optional:
            raise ValueError(f"{spec.command}: required {a.param.name} after an optional one")
        seen_optional = seen_optional or not a.required
    return args


def metavar(param: Param) -> str:
    return param.name.upper()


def usage_line(spec: Spec) -> str:
    words = []
    options = []
    closing = 0
    args = arguments(spec)
    for a in args:
        if a.option:
            options.append(f"[--{a.param.name} {metavar(a.param)}]")
        elif a.rest:
            words.append(f"{metavar(a.param)} [ARGS...]")
        elif a.required:
            words.append(metavar(a.param))
        else:
            words.append(f"[{metavar(a.param)}")
            closing += 1
    positional = " ".join(words) + "]" * closing
    # options after a rest argument would be the command's own: they go first then
    text = " ".join([*options, positional] if spec.rest else [positional, *options]).strip()
    return f"{text} {spec.usage}" if spec.usage else text


def _signal_number(text: str) -> str:
    # vcc kill takes numbers like the original, and names (TERM, SIGTERM) for people
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return str(int(signal.Signals[name]))
    except KeyError:
        return text


def to_wire(param: Param, text: str | list[str]) -> Any:
    """A command-line word as the daemon wants it, checked with the param's own type
    so a bad value fails here with the same message the daemon would give."""
    if isinstance(text, list):
        text = shlex.join(text)
    if isinstance(param.type, Signal):
        text = _signal_number(text)
    if isinstance(param.type, Bool) and text.lower() in ("yes", "no", "on", "off"):
        text = "true" if text.lower() in ("yes", "on") else "false"
    if text == "" and not param.empty_is_value:
        return ""
    value = param.type.convert(param.name, text)
    if isinstance(param.type, SignalName):
        # checked here, sent as typed: "none" converts to "", which the daemon reads as
        # "left out, keep the current signal" instead of "clear it"
        return text
    return value


def collect(spec: Spec, ns: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    try:
        for a in arguments(spec):
            given = getattr(ns, a.param.name, None)
            if given is None or (a.rest and not given):
                continue
            values[a.param.name] = to_wire(a.param, given)
    except VcdError as exc:
        raise ClientError(spec.method, exc.message, exc.code) from None
    for target, source in spec.fill.items():
        if target not in values and source in values:
            values[target] = values[source]
    return values


def _doc(spec: Spec) -> str:
    if spec.doc:
        return spec.doc
    method = method_of(spec)
    return method.doc.strip() if method is not None else spec.method


def summary(doc: str) -> str:
    """The first sentence of a docstring, on one line."""
    text = " ".join(doc.split())
    end = text.find(". ")
    return (text[:end] if end >= 0 else text).rstrip(".")


def _arg_help(param: Param) -> str:
    text = param.doc or param.type.description
    # the choices, unless the doc already lists every one of them
    if isinstance(param.type, Choice) and not all(v in text.split(", ") or f" {v}" in text
                                                  for v in param.type.values):
        text += f" (one of {', '.join(param.type.values)})"
    # a doc that already names its default ("(default 100)") is not told it twice
    if not param.required and param.default not in (None, "") and "default" not in text:
        text += f"; default {param.default}"
    return text


def output_options(parser: argparse.ArgumentParser) -> None:
    """--json and -q also after the command (`vcc list --json`), as people type them."""
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the result as JSON")
    parser.add_argument("-q", dest="quiet", action="store_true", default=argparse.SUPPRESS,
                        help="terse output")


def add_spec(sub: Any, spec: Spec) -> None:
    doc = _doc(spec)
    parser = sub.add_parser(spec.command, add_help=False,
                            description=f"{doc}\n\nCalls {spec.method}.",
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            usage=f"%(prog)s {usage_line(spec)}")
    # -h is only the host before the command; after it, it is help as everywhere
    parser.add_argument("-h", "--help", action="help", help="show this help and exit")
    output_options(parser)
    for a in arguments(spec):
        if a.option:
            # --halt_signal as the param is named, and --halt-signal as people type options
            dashed = a.param.name.replace("_", "-")
            flags = [f"--{a.param.name}"] + ([f"--{dashed}"] if dashed != a.param.name else [])
            parser.add_argument(*flags, dest=a.param.name, metavar=metavar(a.param),
                                help=_arg_help(a.param))
        elif a.rest:
            parser.add_argument(a.param.name, metavar=metavar(a.param), nargs=argparse.REMAINDER,
                                help=_arg_help(a.param))
        else:
            parser.add_argument(a.param.name, metavar=metavar(a.param),
                                nargs=None if a.required else "?", help=_arg_help(a.param))
    if spec.setup is not None:
        spec.setup(parser)
    parser.set_defaults(_spec=spec)


def derived(prefix: str, overrides: Sequence[Spec] = ()) -> list[Spec]:
    """A Spec for every registered method under `prefix`, named by the rest of the
    method name; `overrides` replace the plain ones where the original CLI differs, and
    are kept even when the method is not registered here (their `fallback` params then
    describe it: a newer daemon may have it)."""
    # an override named like the method replaces its plain command; one named otherwise
    # (vcc launch calls vx.create) is a command of its own beside it
    by_method = {s.method: s for s in overrides if s.command == s.method[len(prefix):]}
    extra = [s for s in overrides if s.command != s.method[len(prefix):]]
    specs = []
    for name in sorted(load_all()):
        if not name.startswith(prefix):
            continue
        specs.append(by_method.pop(name, None) or Spec(name[len(prefix):], name))
    specs += list(by_method.values()) + extra
    return specs


def run_spec(spec: Spec, client: Client, ns: argparse.Namespace, out: Output) -> int:
    if spec.rest and not getattr(ns, spec.rest, None):
        raise ClientError(spec.method, f"missing {metavar(params_by_name(spec)[spec.rest])}",
                          int(Fault.MEINVAL))
    if spec.run is not None:
        return spec.run(spec, client, ns, out)
    values = collect(spec, ns)
    result = client.call(spec.method, values)
    if spec.show is not None:
        spec.show(result, ns, out)    # handles --json itself
    else:
        out.result(result)
    method = method_of(spec)
    # vx.stop and vx.reboot answer the halt/reboot command's output: shown, then confirmed
    if method is not None and method.mutating and (result is None or isinstance(result, (str, bool))):
        out.done(confirmation(spec, values))
    return common.OK


PAST = {"add": "added", "create": "created", "kill": "signalled", "reboot": "rebooted",
        "remove": "removed", "rename": "renamed", "restart": "restarted", "set": "set",
        "start": "started", "stop": "stopped"}


def confirmation(spec: Spec, values: dict[str, Any]) -> str:
    """One line saying what a successful change did: `web: started`, `web: vx.limit set`,
    `web: renamed to web2`, `alice: user set`."""
    area, _, verb = spec.command.rpartition(".")
    past = PAST.get(verb, verb + ("d" if verb.endswith("e") else "ed"))
    subject = next((str(values[k]) for k in ("name", "group", "username", "id") if k in values),
                   "")
    what = f"{area} {past}" if area and area != "vx" else past
    if "newname" in values:
        what += f" to {values['newname']}"
    if verb == "kill" and "pid" in values:
        what = f"signal {values.get('sig')} sent to pid {values['pid']}"
    elif spec.method.startswith("vg.") and "name" in values and "group" in values:
        what += f" {values['name']}"
        subject = str(values["group"])
    return f"{subject}: {what}" if subject else what


def params_by_name(spec: Spec) -> dict[str, Param]:
    return {p.name: p for p in params_of(spec)}


# -- the program ------------------------------------------------------------------------

def _help_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", metavar="COMMAND", nargs="?", help="the command to explain")


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    # -h HOST is the host, as in the original clients; `-h` alone, --help and `help` are help
    p = argparse.ArgumentParser(prog=prog, description=description, add_help=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"{common.COMMON_HELP}\n\n{common.EXIT_HELP}")
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-c", dest="config", metavar="FILE", help="client config file (TOML)")
    p.add_argument("-h", dest="host", metavar="HOST", help="daemon host")
    p.add_argument("-p", dest="port", metavar="PORT", type=int, help="daemon port")
    p.add_argument("-u", dest="user", metavar="USER", help="username")
    p.add_argument("--url", metavar="URL", help="daemon URL: http://, https:// or unix://")
    p.add_argument("--cacert", metavar="FILE", help="CA certificate for https://")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("-q", dest="quiet", action="store_true", help="terse output")
    p.add_argument("--non-interactive", action="store_true",
                   help="never prompt for a password (fail instead)")
    return p


@dataclass
class Program:
    prog: str
    description: str
    specs: Sequence[Spec]
    locals: Sequence[Local] = ()

    def __post_init__(self) -> None:
        self.locals = [*self.locals, Local("help", "show the commands, or one command's help",
                                           _help_args, self._help, usage="[COMMAND]",
                                           needs_client=False)]

    def _help(self, client: Client | None, ns: argparse.Namespace, out: Output) -> int:
        parser = self.parser()
        if not ns.topic:
            parser.print_help()
            return common.OK
        if any(e.command == ns.topic and e.own_help for e in self.locals):
            return self.main([ns.topic, "--help"])    # vcdadm template: its own help
        try:
            parser.parse_args([ns.topic, "--help"])
        except SystemExit as exc:   # argparse's help action ends in exit(0)
            return int(exc.code or 0) and common.USAGE
        return common.OK

    def entries(self) -> list[Spec | Local]:
        return sorted([*self.specs, *self.locals], key=lambda e: e.command)

    def commands_text(self) -> str:
        """The command list, usage first as the original clients printed it."""
        lines = []
        for e in self.entries():
            usage = usage_line(e) if isinstance(e, Spec) else e.usage
            what = summary(_doc(e)) if isinstance(e, Spec) else e.help
            lines.append(f"  {e.command} {usage}".rstrip())
            lines.append(f"      {what}")
        return "commands:\n" + "\n".join(lines)

    def parser(self) -> argparse.ArgumentParser:
        p = base_parser(self.prog, f"{self.description}\n\n{self.commands_text()}")
        sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
        p.command_parsers = sub.choices    # type: ignore[attr-defined]  # for errors
        for entry in self.entries():
            if isinstance(entry, Spec):
                add_spec(sub, entry)
            else:
                # no help= here: the command list above is the one shown
                lp = sub.add_parser(entry.command, description=entry.help, add_help=False,
                                    usage=f"%(prog)s {entry.usage}")
                if not entry.own_help:
                    lp.add_argument("-h", "--help", action="help",
                                    help="show this help and exit")
                    output_options(lp)
                entry.setup(lp)
                lp.set_defaults(_local=entry)
        return p

    def main(self, argv: list[str] | None = None) -> int:
        parser = self.parser()
        argv = sys.argv[1:] if argv is None else list(argv)
        commands = {e.command for e in self.entries()}
        if argv and argv[-1] == "-h" and not commands & set(argv[:-1]):
            # `-h` with no host after it (and no command): a person typing it wants help
            parser.print_help()
            return common.OK
        ns, extra = parser.parse_known_args(argv)
        local: Local | None = getattr(ns, "_local", None)
        if extra and local is not None and local.own_help:
            # argparse leaves an option-like first word (template --help) out of REMAINDER
            ns.rest = extra + list(getattr(ns, "rest", []))
        elif extra:
            # the command's own usage line, not the program's: that is where the option is
            sub = getattr(parser, "command_parsers", {}).get(ns.command)
            (sub or parser).error(f"unrecognized arguments: {' '.join(extra)}")
        out = Output(json_mode=ns.json, quiet=ns.quiet)
        if local is not None and not local.needs_client:
            return local.run(None, ns, out)
        try:
            settings = load_settings(ns.config, ns.host, ns.port, ns.user, ns.url, ns.cacert)
        except SettingsError as exc:
            print(f"{self.prog}: {exc}", file=sys.stderr)
            return common.USAGE
        client = Client(settings, interactive=not ns.non_interactive)
        try:
            if local is not None:
                return local.run(client, ns, out)
            return run_spec(ns._spec, client, ns, out)
        except ClientError as error:
            return common.fail(self.prog, error)
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130
        except BrokenPipeError:
            # the reader (| head) is gone: keep the interpreter's final flush quiet too
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return common.OK
