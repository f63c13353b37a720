"""Browser tests of the playground: Playwright and Debian's chromium against a live gunicorn + worker."""
