"""The Feast side of the declarations in ``features/``: objects, store config, online writes."""
