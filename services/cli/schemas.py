"""``schemas generate``: the features and predictions schemas derived from the declarations."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from services.core.domains import load_domain, load_domains
from services.core.settings import StackSettings, load_settings
from services.schematools.schemagen import generate


def register(commands: Any) -> None:
    schemas = commands.add_parser("schemas", help="schemas derived from the domain declarations")
    actions = schemas.add_subparsers(dest="action", required=True)
    generate = actions.add_parser(
        "generate",
        help="write <domain>.features.avsc and <domain>.predictions.avsc from the declarations",
    )
    generate.add_argument("domain", nargs="?", help="only this domain (default: all declared)")
    generate.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming the files that differ from their derivation",
    )
    generate.set_defaults(handler=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    settings = load_settings(StackSettings)
    domains = (
        [load_domain(settings.features_dir, args.domain)]
        if args.domain
        else list(load_domains(settings.features_dir).values())
    )
    return generate(domains, settings.schemas_dir, check=args.check, out=sys.stdout)
