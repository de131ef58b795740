"""Featurizer: events in, windowed features out (online store and the feature log topic)."""
