"""`make bench`: seed, serve, load, report (see bench/run.py)."""
