#!/usr/bin/env bash
# Installs the older system's own client, lager-cli 0.60.0 from PyPI, into a
# venv: the compatibility referee for lagerd. Idempotent.
#
# Its certifi pin (>=2026.10.19) is newer than the registry serves, so the
# client goes in with --no-deps and its dependencies are installed by hand
# from its METADATA (certifi unpinned).
set -euo pipefail
venv="${1:-$(cd "$(dirname "$0")/../.." && pwd)/target/referee-venv}"
if [ -x "$venv/bin/lager" ] && "$venv/bin/python" -c 'import cli' 2>/dev/null; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps 'lager-cli==0.60.0'
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    certifi 'click>=8.1.2' 'colorama>=0.4.3' 'PyYAML>=6.0.1' 'requests>=2.31.0' \
    'requests-toolbelt>=1.0.0' 'tenacity>=6.2.0' 'texttable>=1.6.2' 'trio>=0.27.0' \
    trio-websocket 'urllib3>=1.26.20,<3.0.0' 'wsproto>=0.14.1' 'textual>=3.2.0,<9' \
    'python-socketio>=5.10.0,<6' 'websocket-client>=1.0.0' 'pymongo>=4.0,<6' \
    'prompt_toolkit>=3.0,<4'
"$venv/bin/lager" --version
