#!/usr/bin/env bash
# README command 2: set up and run the whole test suite (Dovecot, PostgreSQL included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec make test
