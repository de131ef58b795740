"""``schemas generate``: the features and predictions schemas derived from the declarations."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from services.core.domains import load_domain, load_domains
from services.core.settings import StackSettings, load_settings
from services.schematools.schemagen import GeneratedSchema, generated_schemas


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
    generated: list[GeneratedSchema] = [
        g for domain in domains for g in generated_schemas(domain, settings.schemas_dir)
    ]
    if args.check:
        stale = [g for g in generated if not g.is_current()]
        for g in stale:
            print(f"{g.path} differs from what its declaration generates", file=sys.stderr)
        if stale:
            print("run `streamml schemas generate` and commit the result", file=sys.stderr)
            return 1
        print(f"{len(generated)} generated schemas are up to date")
        return 0
    for g in generated:
        print(f"{'wrote' if g.write() else 'unchanged'} {g.path}")
    return 0
