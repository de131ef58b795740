"""Schema tools: schemas generated from the domain declarations, compatibility checks."""
