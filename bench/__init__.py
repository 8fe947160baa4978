"""Benchmarks that print figures: ``python -m bench.run_all`` runs them all.

Each module is also runnable on its own (``python -m bench.ingest --help``).
They start a real Dovecot, a capturing SMTP server and scratch databases
through the test harness in ``tests/support``.
"""
