"""Shared fixtures. Tests that need bwrap, a language runtime or root fail when it is missing;
the only opt-out is an explicit variable (CODEEXEC_SKIP_DOCKER=1 for the docker backend, later)."""

from __future__ import annotations

import os

# Development defaults for the test process only; settings never use them when DEBUG=0 is set.
os.environ.setdefault("DEBUG", "1")
