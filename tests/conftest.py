"""Shared fixtures for mlcheck's own tests.

torch is imported here, once, before any in-process pytester run: pytester removes modules
that an inner run imported, and importing torch a second time in one process crashes it.
"""

import torch  # noqa: F401
