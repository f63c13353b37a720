"""Playground tests: the staff page at `/` and its JSON endpoints, through Django's test client."""
