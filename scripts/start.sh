#!/usr/bin/env bash
# README command 1: set up and start the daemon on the embedded default
# (SQLite in var/, Maildir inbox var/mail, outbound mail written to var/sent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec make run
