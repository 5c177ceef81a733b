#!/usr/bin/env bash
# Prepare a fresh Debian machine (Python 3.11) for JPO: a virtualenv in .venv with the
# project and its pinned dependencies, and Debian's prometheus (+ promtool) when missing.
# Idempotent and quiet when nothing changed; called by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${JPO_PYTHON:-python3.11}"
VENV="${JPO_VENV:-.venv}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup: $PYTHON not found; install Python 3.11 (apt-get install -y python3.11 python3.11-venv) or set JPO_PYTHON" >&2
  exit 2
fi

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's prometheus package (prometheus + promtool)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
    # The package starts a system service on :9090; JPO's tests start their own server.
    (systemctl stop prometheus 2>/dev/null || service prometheus stop 2>/dev/null || true) >/dev/null 2>&1
  else
    echo "setup: prometheus/promtool missing and not root: run 'sudo apt-get install -y prometheus'" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the dependency declaration changed.
stamp="$VENV/.jpo-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing JPO and pinned dependencies into $VENV (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first, on its own: on machines with the local CPU wheel this picks it up, and it
  # keeps the resolver from choosing another build for ray's dependencies.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
