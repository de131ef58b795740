"""Where the project's data folders are: ``schemas/`` and ``features/``.

In a source checkout (the usual, editable install) they sit at the repository root; a
wheel carries copies under ``services/_bundled``. Settings can point elsewhere.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_SOURCE_ROOT = _PACKAGE_DIR.parent


def _data_dir(name: str) -> Path:
    checkout = _SOURCE_ROOT / name
    if checkout.is_dir():
        return checkout
    return _PACKAGE_DIR / "_bundled" / name


def default_schemas_dir() -> Path:
    return _data_dir("schemas")


def default_features_dir() -> Path:
    return _data_dir("features")


def default_docs_dir() -> Path:
    """The checkout's ``docs/`` (generated documents are committed there), else the current
    folder (an installed wheel has no docs)."""
    checkout = _SOURCE_ROOT / "docs"
    return checkout if checkout.is_dir() else Path.cwd()


def default_compose_dir() -> Path:
    """``compose/``: the alert rules and dashboards (a wheel carries the alert rules)."""
    return _data_dir("compose")
