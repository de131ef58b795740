"""The Feast side of the declarations in ``features/``: objects, store configuration, online writes.

Importing feast sets ``PROMETHEUS_MULTIPROC_DIR`` for the whole process (feast/metrics.py), which
would switch every later prometheus_client metric, ours and those of child processes, to
multiprocess files in /tmp. This package imports feast once, here, with prometheus_client's value
class already fixed and the environment restored afterwards.
"""

import os

import prometheus_client.values  # noqa: F401  (fixes the in-process value class first)

_FEAST_ENV = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
_before = {name: os.environ.get(name) for name in _FEAST_ENV}
import feast  # noqa: E402, F401

for _name, _value in _before.items():
    if _value is None:
        os.environ.pop(_name, None)
    else:
        os.environ[_name] = _value
