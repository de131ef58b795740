"""streamml: event-driven streaming machine learning.

The package is laid out like the system it runs: one subpackage per service
(``featurizer``, ``scorer``, ``trainer``, ``producer``), the embedded ``stack``,
and the shared ``core`` every service stands on.
"""

__version__ = "0.1.0"
