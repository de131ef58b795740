"""The scorer's HTTP side: scoring, health and metrics routes (api), served from the
scorer's own process (server)."""
