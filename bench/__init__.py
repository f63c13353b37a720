"""codeexec benchmarks; the entry point is bench/run.py (`make bench`)."""
