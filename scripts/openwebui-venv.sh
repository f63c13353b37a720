#!/usr/bin/env bash
# The virtualenv with Open WebUI 0.12.4 that tests/openwebui runs the tool in (Open WebUI's own code,
# kept apart from the project's virtualenv: it brings ~2.9 GB of dependencies). Made once and reused:
# nothing is done when its python imports open_webui and reports version 0.12.4. A half-made or other
# version is removed and made again. Takes minutes the first time.
#
#   OPENWEBUI_VENV   where (default /var/cache/codeexec/openwebui-0.12.4)
#   PYTHON           the interpreter to make it with (default python3.11; Open WebUI needs 3.11 or 3.12)
#
# torch is installed first, pinned, so pip takes this machine's CPU wheel instead of resolving the
# multi-gigabyte CUDA build as a dependency of open-webui.
set -euo pipefail

VERSION=0.12.4
TORCH=2.13.0
VENV="${OPENWEBUI_VENV:-/var/cache/codeexec/openwebui-$VERSION}"
PYTHON="${PYTHON:-python3.11}"

ready() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" - "$VERSION" <<'EOF' >/dev/null 2>&1
import importlib.metadata
import sys

import open_webui  # noqa: F401

sys.exit(importlib.metadata.version("open-webui") != sys.argv[1])
EOF
}

if ready; then
  echo "openwebui-venv: $VENV has open-webui $VERSION"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9 # another run may be making it right now
if ready; then
  echo "openwebui-venv: $VENV has open-webui $VERSION"
  exit 0
fi

if [ -e "$VENV" ]; then
  # Only ever a virtualenv (never whatever else OPENWEBUI_VENV might name).
  if [ ! -f "$VENV/pyvenv.cfg" ]; then
    echo "openwebui-venv: $VENV exists and is not a virtualenv; remove it or set OPENWEBUI_VENV" >&2
    exit 1
  fi
  echo "openwebui-venv: $VENV is incomplete or another version; making it again"
  rm -rf -- "$VENV"
fi

command -v "$PYTHON" >/dev/null || {
  echo "openwebui-venv: $PYTHON not found (set PYTHON)" >&2
  exit 1
}
echo "openwebui-venv: making $VENV (torch $TORCH, open-webui $VERSION; this takes minutes)"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet "torch==$TORCH"
"$VENV/bin/python" -m pip install --quiet "open-webui==$VERSION"
if ! ready; then
  echo "openwebui-venv: $VENV was made but does not import open_webui $VERSION" >&2
  exit 1
fi
echo "openwebui-venv: $VENV ready ($(du -sh "$VENV" | cut -f1))"
