#!/usr/bin/env bash
# The demo: runs examples/demo's selection with plain pytest, then with shoal,
# on a machine with only Rust and Python 3 (it builds shoal and sets up a
# virtualenv with pytest first).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=".venv-demo"
if ! "$venv/bin/python" -c "import pytest" 2>/dev/null; then
    echo "setting up $venv with pytest" >&2
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pytest==9.2.0"
fi
cargo build --release --quiet -p shoal
python="$PWD/$venv/bin/python"
shoal="$PWD/target/release/shoal"
cd examples/demo

now() { "$python" -c 'import time; print(time.time())'; }
elapsed() { "$python" -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$1" "$(now)"; }

mapfile -t paths < <(grep -v '^\s*#' selected.txt | grep -v '^\s*$')
echo "== plain pytest, one test after another"
start=$(now)
"$python" -m pytest -q -p no:cacheprovider "${paths[@]}" || true
pytest_seconds=$(elapsed "$start")

echo
echo "== shoal run --select selected.txt"
start=$(now)
status=0
"$shoal" run --python "$python" --select selected.txt "$@" || status=$?
shoal_seconds=$(elapsed "$start")

echo
"$python" -c 'import sys; p, s = map(float, sys.argv[1:]); print(f"pytest: {p:.1f}s   shoal: {s:.1f}s   speed-up: {p / s:.1f}x")' \
    "$pytest_seconds" "$shoal_seconds"
exit "$status"
