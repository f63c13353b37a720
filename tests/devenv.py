"""pytest plugin loaded with `-p tests.devenv` before pytest-django reads the settings.

Tests run with the development defaults (DEBUG=1) unless the caller set DEBUG; settings never
use those defaults when DEBUG=0.
"""

import os

os.environ.setdefault("DEBUG", "1")
# A Redis database of their own, so a running development stack never takes the tests' messages.
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
