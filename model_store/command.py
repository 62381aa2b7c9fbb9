"""``emostream models``: list, show, promote and roll back model versions.

The actions that need training's code (``publish``, ``average``, ``ensemble``, ``convert``, ``shadow``) are
added to the same command by :func:`training.command.add_model_actions`; the model store never imports training.
"""

import argparse
import json

from emostream.config import Settings
from model_store.card import combination, model_card
from model_store.manifest import Manifest


def _cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    store = settings.model_store()
    live = store.live_version()
    rows = [store.manifest(v) for v in store.versions()]
    if args.json:
        print(json.dumps([{**m.to_json(), "live": m.version == live} for m in rows]))
    for m in [] if args.json else rows:
        acc = m.validation_accuracy
        print(
            f"{'*' if m.version == live else ' '} {m.version:<40} {m.architecture:<12} "
            f"{m.created_at:<26} val_acc={'-' if acc is None else f'{acc:.4f}'}"
        )
    return 0


def _cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    store = settings.model_store()
    live = store.live_version()
    manifest = store.manifest(args.version or live or "")
    if args.card:
        print(model_card(store, manifest.version), end="")
    elif args.json:
        print(json.dumps({**manifest.to_json(), "live": manifest.version == live}))
    else:
        print(_summary(manifest, live))
    return 0


def _summary(manifest: Manifest, live: str | None) -> str:
    """A version in a few lines (``--json`` prints the whole manifest)."""
    m = manifest.metrics
    accuracy = m.get("validation_accuracy")
    lines = [
        f"{manifest.version}{' (live)' if manifest.version == live else ''}",
        f"  architecture  {manifest.architecture}, {m.get('parameters') or '?'} parameters, "
        + (combination(manifest.training_config) or f"{m.get('epochs') or '?'} epochs"),
        f"  created       {manifest.created_at}; parent {manifest.parent or '-'}",
        f"  validation    accuracy {'-' if accuracy is None else f'{accuracy:.4f}'}"
        + (f", served file {m['served_validation_accuracy']:.4f}" if "served_validation_accuracy" in m else "")
        + (f", macro F1 {m['validation_macro_f1']:.4f}" if "validation_macro_f1" in m else ""),
        f"  calibration   temperature {manifest.temperature:.2f}"
        + (f", ECE {m['validation_ece']:.4f}" if "validation_ece" in m else ""),
        f"  files         {', '.join(sorted(manifest.files))}",
    ]
    return "\n".join(lines)


def _cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    settings.model_store().promote(args.version, force=args.force, reason="cli")
    _announce(settings, args.version)
    print(f"live: {args.version}")
    return 0


def _cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    version = settings.model_store().rollback(reason="cli")
    _announce(settings, version)
    print(f"live: {version}")
    return 0


def _announce(settings: Settings, version: str) -> None:
    """Tell running workers at once, on REDIS_URL or the Redis of the ``up`` running here (they would also
    notice within seconds by polling)."""
    url = settings.redis_url or settings.running_up_redis()
    if url:
        from emostream import redis_client
        from model_store.announcement import announce

        announce(redis_client.connect(url), settings, version)


def add_parser(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``models``; returns its actions, for the other packages' own (``publish``, ...)."""
    p = sub.add_parser("models", help="list, show, promote and roll back model versions")
    actions = p.add_subparsers(dest="action", required=True)
    for name, about, func in (
        ("list", "every version, the live one starred", _cmd_list),
        ("show", "one version's summary", _cmd_show),
    ):
        a = actions.add_parser(name, help=about)
        a.add_argument("--json", action="store_true", help="the whole manifest as JSON")
        if name == "show":
            a.add_argument("version", nargs="?", help="default: the live version")
            a.add_argument("--card", action="store_true", help="print the version's model card (Markdown)")
        a.set_defaults(func=func)
    promote = actions.add_parser("promote", help="make a version live (refused if less accurate than live)")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="promote even if less accurate than live")
    promote.set_defaults(func=_cmd_promote)
    actions.add_parser("rollback", help="make the previously live version live again").set_defaults(func=_cmd_rollback)
    return actions
