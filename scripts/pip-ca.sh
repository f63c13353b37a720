#!/usr/bin/env bash
# Writes .build/pip-ca.crt, the CA bundle this host's pip trusts (PIP_CERT or pip's global.cert), when
# there is one: the service image's pip then works behind the same TLS-intercepting proxy. The
# Dockerfile's COPY is optional, so without the file the build trusts the image's own CAs only.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .build && mkdir -p .build
pip_cert="${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}"
if [ -n "$pip_cert" ] && [ -f "$pip_cert" ]; then
  cp "$pip_cert" .build/pip-ca.crt
fi
