#!/usr/bin/env bash
# System services the test suite needs: Dovecot, and PostgreSQL running.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
if ! command -v dovecot >/dev/null && [ ! -x /usr/sbin/dovecot ]; then
  need+=(dovecot-imapd)   # the real IMAP server the tests start (doveadm comes with it)
fi
command -v openssl >/dev/null || need+=(openssl)   # throwaway CA for the TLS tests
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if command -v pg_isready >/dev/null && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
