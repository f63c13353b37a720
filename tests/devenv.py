"""pytest plugin loaded with `-p tests.devenv` before pytest-django reads the settings.

Tests run with the development defaults (DEBUG=1) unless the caller set DEBUG; settings never
use those defaults when DEBUG=0.
"""

import os

os.environ.setdefault("DEBUG", "1")
