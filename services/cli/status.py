"""``streamml status``: the stack, each running service's consumer group and lag, each
domain's serving models, and the open alerts, at a glance."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="the stack, each service's consumer group and lag, the serving models, open alerts",
    )
    status.add_argument(
        "--alerts-hours", type=float, default=24.0, help="alerts raised this recently (default 24)"
    )
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from services.core.domains import load_domains
    from services.core.settings import StackSettings, load_settings
    from services.stack.status import show, stack_status

    settings = load_settings(StackSettings)
    domains = list(load_domains(settings.features_dir).values())
    report = stack_status(settings, domains, args.alerts_hours)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        show(report, args.alerts_hours, sys.stdout)
    return 0
