"""``monitor report``: the monitor's figures per model version, from ``<domain>.monitoring``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    monitor = commands.add_parser("monitor", help="what the monitor measured")
    actions = monitor.add_subparsers(dest="action", required=True)
    report = actions.add_parser("report", help="quality per model version (exit 1: none yet)")
    report.add_argument("domain")
    report.add_argument("--json", action="store_true", help="one JSON object")
    report.add_argument("--plot", type=Path, metavar="FILE.png", help="error rate over time")
    report.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from services.monitor.report import report

    return report(args.domain, as_json=args.json, plot=args.plot, out=sys.stdout)
