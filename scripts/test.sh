#!/usr/bin/env bash
# Runs shoal's whole test suite on a machine with only Rust and Python 3:
# sets up one virtualenv per supported pytest (the oldest and the newest we
# support), then runs the unit tests once and the integration tests, which
# drive the real binary on the projects in fixtures/, against each pytest.
#
#   scripts/test.sh            # both pytest versions
#   SHOAL_TEST_PYTEST_VERSIONS=9.2.0 scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

versions="${SHOAL_TEST_PYTEST_VERSIONS:-7.4.4 9.2.0}"
python="${PYTHON:-python3}"

setup_venv() {
    local version="$1" venv=".venv-test/pytest-$1"
    # junitparser reads shoal's and pytest's JUnit files in the tests;
    # jsonschema checks shoal's JSON reports against docs/json-report.schema.json;
    # pytest-cov (with a pinned coverage.py) is measured by the --cov tests.
    local packages=("pytest==$version" "junitparser==4.0.2" "jsonschema==4.23.0"
        "pytest-cov==7.1.0" "coverage==7.17.5")
    # pytest-xdist rides along with the newest pytest: tests check that a
    # user's `-n auto` in addopts does not start xdist inside shoal's workers.
    [[ "$version" == 9.* ]] && packages+=("pytest-xdist==3.8.0")
    if ! "$venv/bin/python" - "$version" <<'PY' 2>/dev/null; then
import sys, importlib.metadata, pytest, junitparser
version = importlib.metadata.version
sys.exit(pytest.__version__ != sys.argv[1] or version("jsonschema") != "4.23.0"
         or version("pytest-cov") != "7.1.0" or version("coverage") != "7.17.5")
PY
        echo "setting up $venv (${packages[*]})" >&2
        rm -rf "$venv"
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}"
    fi
    echo "$venv/bin/python"
}

# Third-party plugins (pytest-django, pytest-randomly, ...) get their own venv.
SHOAL_TEST_PLUGINS_PYTHON="$PWD/$(scripts/plugins_venv.sh)"
export SHOAL_TEST_PLUGINS_PYTHON

first=1
for version in $versions; do
    interpreter="$(setup_venv "$version")"
    echo "== tests against pytest $version ($interpreter)" >&2
    if [[ $first == 1 ]]; then
        SHOAL_TEST_PYTHON="$PWD/$interpreter" cargo test --workspace --locked
        first=0
    else
        SHOAL_TEST_PYTHON="$PWD/$interpreter" cargo test --locked -p shoal --test it
    fi
done
