"""Feast objects for `feast apply`, derived from the domain declarations in this folder."""

from pathlib import Path

from services.core.domains import load_domains
from services.featurestore.feast_objects import feast_objects

for _object in feast_objects(
    load_domains(Path(__file__).parent).values(), Path(__file__).parent / "data"
):
    globals()[_object.name] = _object
