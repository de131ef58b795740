"""The monitor: predictions joined with the outcomes that arrive later and the vectors they
scored (``<domain>.labelled``); quality and drift measured on them (the second half of the
loop)."""
