"""``schemas generate``: the features and predictions schemas derived from the declarations."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from services.core.domains import load_domain, load_domains
from services.core.paths import default_docs_dir
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
    asyncapi = actions.add_parser(
        "asyncapi",
        help="write the AsyncAPI 3 document of every declared domain's topics and the "
        "platform's (docs/asyncapi.yaml)",
    )
    asyncapi.add_argument("--out", type=Path, default=None, help="default: docs/asyncapi.yaml")
    asyncapi.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when the file is stale"
    )
    asyncapi.set_defaults(handler=cmd_asyncapi)


def cmd_generate(args: argparse.Namespace) -> int:
    settings = load_settings(StackSettings)
    domains = (
        [load_domain(settings.features_dir, args.domain)]
        if args.domain
        else list(load_domains(settings.features_dir).values())
    )
    return generate(domains, settings.schemas_dir, check=args.check, out=sys.stdout)


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from services.schematools.asyncapi import write_asyncapi

    settings = load_settings(StackSettings)
    domains = list(load_domains(settings.features_dir).values())
    out_path = args.out or default_docs_dir() / "asyncapi.yaml"
    return write_asyncapi(
        domains,
        settings.schemas_dir,
        out_path,
        package_version("streamml"),
        check=args.check,
        out=sys.stdout,
    )
