"""Scorer: feature vectors in, exactly one prediction per event out."""
