"""Reusable harness for integration tests that talk to real servers.

- :mod:`tests.support.dovecot`: a throw-away Dovecot IMAP server plus synchronous helpers.
- :mod:`tests.support.smtpd`: an in-process SMTP server that captures mail and can refuse it.
- :mod:`tests.support.proxy`: a TCP proxy that can delay, stall or cut connections.
- :mod:`tests.support.services`: skip-or-fail policy and scratch PostgreSQL databases.
- :mod:`tests.support.ports`: free loopback ports.

The pytest fixtures that wrap these live in ``tests/integration/conftest.py``.
"""
