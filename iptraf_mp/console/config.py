"""The options of docs/decisions.md rule 19 in a TOML file, as the defaults of the command line.

    $XDG_CONFIG_HOME/iptraf-mp/config.toml   (else ~/.config/iptraf-mp/config.toml)
    iptraf-mp --config FILE ...              (a file given this way must exist)

Precedence: a flag on the command line, then the file, then the built-in default. The file
is read while the command line is parsed, by making its values the parser's defaults, so
every consumer of `args` (the engine settings, capture set-up, the console) sees one answer.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from iptraf_mp.core.othertable import DEFAULT_FLOW_IDLE

ENV_DISABLE = "IPTRAF_MP_NO_CONFIG"  # set (to anything) to ignore the default file, e.g. in tests


@dataclass(frozen=True, slots=True)
class Option:
    key: str  # in the TOML file
    dest: str  # on the argparse namespace
    kind: type
    default: object
    minimum: float | None = None  # numbers: the smallest value accepted
    positive: bool = False  # numbers: must be > minimum (strictly)
    help: str = ""


OPTIONS = (
    Option("reverse_dns", "dns", bool, False, help="show host names (resolved in the background)"),
    Option("service_names", "services", bool, False, help="show ports as service names"),
    Option("promiscuous", "promisc", bool, True, help="put interfaces in promiscuous mode"),
    Option("kbytes", "kbytes", bool, False, help="activity mode: kB/s instead of kbit/s"),
    Option("source_mac", "mac", bool, False, help="source MAC column (M) and MAC in lines"),
    Option("tcp_timeout", "tcp_timeout", float, 15.0, 0.0, True, "TCP idle timeout, minutes"),
    Option("flow_idle", "flow_idle", float, DEFAULT_FLOW_IDLE / 60.0, 0.0, True,
           "non-TCP flows end after this many idle minutes"),
    Option("persistence", "persistence", float, 0.0, 0.0, False,
           "flush closed/idle pairs every N minutes, 0 = off"),
    Option("refresh", "refresh", float, 0.25, 0.0, True, "seconds between screen updates"),
    Option("lower_lines", "lower_lines", int, 512, 1, False, "lines kept in the lower window"),
)
BY_KEY = {o.key: o for o in OPTIONS}

class ConfigError(Exception):
    """A one-line reason why the config file cannot be used."""


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "iptraf-mp" / "config.toml"


def load(path: str | os.PathLike | None) -> dict[str, object]:
    """{dest: value} from the file at `path` (None: the default file, if there is one)."""
    explicit = path is not None
    if path is None:
        if os.environ.get(ENV_DISABLE):
            return {}
        path = default_path()
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config {p}: no such file") from None
        return {}
    except OSError as e:
        raise ConfigError(f"config {p}: {e.strerror}") from None
    import tomllib  # (here: most runs have no file to parse)

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {p}: {e}") from None
    return validate(data, str(p))


def validate(data: dict, where: str = "config") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        opt = BY_KEY.get(key)
        if opt is None:
            known = ", ".join(BY_KEY)
            raise ConfigError(f"{where}: unknown option {key!r} (known: {known})")
        out[opt.dest] = _check(opt, value, where)
    return out


def _check(opt: Option, value: object, where: str) -> object:
    if opt.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {opt.key} must be true or false")
        return value
    # TOML distinguishes 15 and 15.0; a float option takes both, an int option only ints
    ok = isinstance(value, int) and not isinstance(value, bool)
    if opt.kind is float:
        ok = ok or isinstance(value, float)
    if not ok:
        what = "an integer" if opt.kind is int else "a number"
        raise ConfigError(f"{where}: {opt.key} must be {what}")
    if opt.minimum is not None:
        bad = value <= opt.minimum if opt.positive else value < opt.minimum
        if bad:
            rel = "greater than" if opt.positive else "at least"
            raise ConfigError(f"{where}: {opt.key} must be {rel} {opt.minimum:g}")
    return opt.kind(value)


def install(parser: argparse.ArgumentParser) -> None:
    """Add --config, and make the file's values the parser's defaults at parse time."""
    parser.add_argument("--config", metavar="FILE",
                        help=f"options file (TOML; default {default_path()}, if it exists)")
    original = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        argv = sys.argv[1:] if args is None else list(args)
        pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        pre.add_argument("--config")
        known, _rest = pre.parse_known_args(argv)
        try:
            values = load(known.config)
        except ConfigError as e:
            parser.error(str(e))
        if values:
            parser.set_defaults(**values)
        return original(args, namespace)

    # An instance attribute: parse_args() looks parse_known_args up on the instance, so the
    # file is read exactly when (and each time) a command line is parsed.
    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]
