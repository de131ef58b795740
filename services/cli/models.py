"""``train`` and ``models list|promote|rollback``: the model registry on ``ml.models``."""

from __future__ import annotations

import argparse
from typing import Any

from services.core.declarations import Domain
from services.core.domains import load_domain
from services.core.serde import CodecFactory, codecs_for
from services.core.settings import StackSettings, load_settings
from services.registry.stages import end_trial, promote, rollback, stage_trial
from services.registry.versions import CANARY, CANDIDATE, CHAMPION, SHADOW, read_registry
from services.trainer import publish as trainer


def register(commands: Any) -> None:
    train = commands.add_parser(
        "train", help="train a model version and register it as a candidate"
    )
    train.add_argument("domain")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--bootstrap", action="store_true", help="on synthetic data")
    source.add_argument(
        "--from-history", action="store_true", help="on <domain>.labelled (the monitor's join)"
    )
    for bound in ("--since", "--until"):  # with --from-history
        train.add_argument(bound, metavar="TIME|P:O,...", help="event time, or offsets")
    train.add_argument("--seed", type=int, default=7)
    train.add_argument("--events", type=int, default=60_000, help="synthetic events to train on")
    train.add_argument("--kind", choices=trainer.KINDS, default=trainer.ONNX, help="onnx or river")
    train.set_defaults(handler=cmd_train)

    models = commands.add_parser("models", help="list, promote or roll back model versions")
    actions = models.add_subparsers(dest="action", required=True)
    for name, helped, handler, takes_version in (
        ("list", "every version of the domain's model", cmd_list, False),
        ("history", "the lineage: datasets, gates, canaries, promotions", cmd_history, False),
        ("promote", "make VERSION the serving champion", cmd_promote, True),
        ("rollback", "give traffic back to the previous champion", cmd_rollback, False),
        ("shadow", "let VERSION score everything, to the shadow topic only", cmd_trial, True),
        ("canary", "let VERSION score a share of the keys (sticky by key)", cmd_trial, True),
    ):
        action = actions.add_parser(name, help=helped)
        action.add_argument("domain")
        if takes_version:
            action.add_argument("version")
        action.set_defaults(handler=handler, stage=name)
    actions.choices["canary"].add_argument(
        "--share", type=float, default=0.1, help="share of entity keys, in (0, 1] (default 0.1)"
    )
    end = actions.add_parser("end", help="send the canary or the shadow back to candidate")
    end.add_argument("domain")
    end.add_argument("stage", choices=[CANARY, SHADOW])
    end.set_defaults(handler=cmd_end_trial)


def cmd_train(args: argparse.Namespace) -> int:
    settings, domain = _settings_and_domain(args)
    options = ("from_history", "since", "until", "seed", "events", "kind")
    print(trainer.train(settings, domain, **{name: getattr(args, name) for name in options}))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    settings, domain = _settings_and_domain(args)
    versions = read_registry(settings, codecs_for(settings)).versions(domain.model_name)
    if not versions:
        hint = f"streamml train {domain.name} --bootstrap"
        print(f"{domain.model_name}: no versions registered ({hint})")
    for v in versions:
        auc = v.metrics.get("auc")
        shown = "-" if auc is None else f"{auc:.4f}"
        stage = f"{v.stage}({v.traffic_share:g})" if v.stage == CANARY else v.stage
        print(f"{v.model_name}\t{v.version}\t{stage}\t{v.dataset_id}\tauc={shown}\t{v.sha256[:12]}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from services.trainer.lineage import lineage

    settings, domain = _settings_and_domain(args)
    print("\n".join(lineage(settings, codecs_for(settings), domain.model_name)))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    promoted = promote(*_registry_of(args), args.version)
    print(f"{promoted.key} is now {CHAMPION}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    restored, retired = rollback(*_registry_of(args))
    print(f"{restored.key} is {CHAMPION} again; {retired.key} archived")
    return 0


def cmd_trial(args: argparse.Namespace) -> int:
    staged = stage_trial(*_registry_of(args), args.version, args.stage, getattr(args, "share", 0.0))
    share = f" on {staged.traffic_share:.0%} of the keys" if args.stage == CANARY else ""
    print(f"{staged.key} is now the {args.stage}{share}")
    return 0


def cmd_end_trial(args: argparse.Namespace) -> int:
    ended = end_trial(*_registry_of(args), args.stage)
    print(f"{ended.key} is a {CANDIDATE} again")
    return 0


def _settings_and_domain(args: argparse.Namespace) -> tuple[StackSettings, Domain]:
    settings = load_settings(StackSettings)
    return settings, load_domain(settings.features_dir, args.domain)


def _registry_of(args: argparse.Namespace) -> tuple[StackSettings, CodecFactory, str]:
    """What every registry call takes: the settings, their codecs, the domain's model name."""
    settings, domain = _settings_and_domain(args)
    return settings, codecs_for(settings), domain.model_name
