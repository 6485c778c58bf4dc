#!/usr/bin/env bash
# Sets up .venv-test/plugins, the virtualenv with the third-party pytest
# plugins the integration tests check shoal against (pytest-django,
# pytest-randomly, pytest-asyncio, hypothesis, syrupy, ...), pinned in
# scripts/plugins-requirements.txt, and prints its interpreter's path.
# Kept apart from the pytest-X venvs: pytest-randomly would shuffle every
# other fixture's tests. Rebuilt only when the requirements file changes.
#
#   SHOAL_TEST_PLUGINS_PYTHON="$PWD/$(scripts/plugins_venv.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
venv=".venv-test/plugins"
requirements="scripts/plugins-requirements.txt"

if ! cmp -s "$requirements" "$venv/requirements.txt" || ! "$venv/bin/python" -c "import pytest" 2>/dev/null; then
    echo "setting up $venv ($requirements)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
    cp "$requirements" "$venv/requirements.txt"
fi
echo "$venv/bin/python"
