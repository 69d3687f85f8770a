"""``jobwatch config check|show|table``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from jobwatch.app.config import (SETTINGS, check_environment, load_settings, region_warnings, render_markdown_table,
                                 store_warning, update_readme)
from jobwatch.cli.common import EXIT_USAGE
from jobwatch.core.errors import ConfigError


def _cmd_check(args: argparse.Namespace) -> int:
    problems = check_environment(os.environ, getattr(args, "file", None))
    out = sys.stdout
    if problems:
        print(f"{len(problems)} configuration problem(s):", file=out)
        for p in problems:
            print(f"  - {p}", file=out)
        return EXIT_USAGE
    settings = load_settings(os.environ, getattr(args, "file", None))
    print(f"configuration ok ({len(SETTINGS)} settings; store {settings.store_url_display})", file=out)
    warning = store_warning(settings.store_url.reveal(), os.environ)
    if warning:
        print(f"warning: {warning}", file=out)
    for var, _region, note in region_warnings(settings):
        print(f"warning: {var}: {note}", file=out)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(os.environ, getattr(args, "file", None))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    shown = settings.display()
    if args.json:
        print(json.dumps(shown, indent=2, default=list))
    else:
        width = max(len(k) for k in shown)
        for k, v in shown.items():
            print(f"{k:<{width}}  {'-' if v is None else v}")
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    if args.write:
        with open(args.write, encoding="utf-8") as fh:
            text = fh.read()
        try:
            new = update_readme(text)
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        with open(args.write, "w", encoding="utf-8") as fh:
            fh.write(new)
        return 0
    sys.stdout.write(render_markdown_table())
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``jobwatch config check|show|table``. Each sub-command sets ``func(args) -> exit code``."""
    p = subparsers.add_parser("config", help="check and document the configuration",
                              description="Check the configuration in the environment (and an optional TOML "
                                          "file), show the effective values, or print the settings table.")
    sub = p.add_subparsers(dest="config_command", metavar="{check,show,table}")
    sub.required = True
    c = sub.add_parser("check", help="validate the environment; exit 2 listing every problem",
                       description="Validate every JOBWATCH_* variable (and the TOML file, if any). Exit codes: "
                                   "0 valid, 2 one or more problems (all listed; the code every command exits "
                                   "with on a configuration problem).")
    c.add_argument("--file", metavar="TOML", help="settings file (default: $JOBWATCH_CONFIG_FILE)")
    c.set_defaults(func=_cmd_check)
    s = sub.add_parser("show", help="print the effective settings (secrets masked)",
                       description="Print every setting's effective value; secrets are masked.")
    s.add_argument("--file", metavar="TOML", help="settings file (default: $JOBWATCH_CONFIG_FILE)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=_cmd_show)
    t = sub.add_parser("table", help="print the README's configuration table (Markdown)",
                       description="Print the Markdown table of every setting, or rewrite the README block.")
    t.add_argument("--write", metavar="README", help="replace the table between the README's markers in place")
    t.set_defaults(func=_cmd_table)
    return p

