"""The demo: the whole path on the embedded stack, from nothing to a printed summary."""
