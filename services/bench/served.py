"""What the peers serve: the model card beside the ONNX file they are given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.registry.artifacts import CARD_FILE


def model_card(model_path: Path) -> dict[str, Any]:
    """The model card beside the artifact, or {} when there is none."""
    path = model_path.parent / CARD_FILE
    if not path.exists():
        return {}
    card: dict[str, Any] = json.loads(path.read_text())
    return card
