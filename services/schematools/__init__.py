"""Schema generation from the domain declarations, and compatibility checks between schema versions."""
