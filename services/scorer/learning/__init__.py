"""Online learning: river models learning from the monitor's join, ``<domain>.labelled``
(labelled), test-then-train with snapshots registered as versions (learner)."""
