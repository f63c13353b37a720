"""Shared fixtures. Tests that need bwrap, a language runtime or root fail when it is missing;
the only opt-out is an explicit variable (CODEEXEC_SKIP_DOCKER=1 for the docker backend, later).
DEBUG=1 for tests is set by the tests.devenv plugin (see pyproject.toml)."""
