"""The model registry: versions and their stages on ml.models, artifacts and their checksums,
promotion, canary and shadow trials, rollback. The one way in for every other room."""
