"""Producer: puts payment transactions on the events topic (synthetic ones for demos and tests)."""
