#!/usr/bin/env bash
# Runs shoal's whole test suite on a machine with Rust and several Pythons:
# sets up one virtualenv per entry of the matrix below under .venv-test/,
# runs the unit tests once, then the integration tests, which drive the real
# binary on the projects in fixtures/: all of them on the first entry, and on
# each later entry the modules whose behaviour depends on what differs there
# (see later_entry_modules below).
#
# The matrix, PYTHON:PYTEST: every Python from 3.9 to 3.13 with the newest
# pytest it installs (9.2.0; 8.4.2 on 3.9, which pytest 9 dropped), and the
# oldest supported pytest (7.4.4) on 3.11:
#
#   3.11:9.2.0 3.11:7.4.4 3.9:8.4.2 3.10:9.2.0 3.12:9.2.0 3.13:9.2.0
#
# Interpreters are found by minor version: `pyenv prefix 3.12`, else the
# newest $(pyenv root)/versions/3.12.*, else python3.12 on PATH. An
# interpreter the matrix names that cannot be found is an error, never a skip.
#
# Knobs for developers (CI sets none of them):
#   SHOAL_TEST_MATRIX="3.12:9.2.0 3.9:8.4.2"  run these entries instead
#   SHOAL_TEST_PYTHONS="3.12 3.13"             keep only the entries on these Pythons
#   SHOAL_TEST_PYTEST_VERSIONS="9.2.0"         keep only the entries with these pytests
#   SHOAL_TEST_UNIT=0                          skip the unit tests (cargo test --workspace
#                                              on the first entry) and run only the
#                                              integration tests on every entry
#   RUST_TEST_THREADS=N                        tests run at once in each cargo test (libtest's
#                                              own knob; default: the CPUs)
# e.g. `SHOAL_TEST_PYTHONS=3.13 SHOAL_TEST_UNIT=0 scripts/test.sh`. Each venv is
# reused while its Python and pins match; missing ones are set up in parallel
# while cargo builds the tests (pip's output in .venv-test/NAME.log).
set -euo pipefail
cd "$(dirname "$0")/.."

matrix=(${SHOAL_TEST_MATRIX:-3.11:9.2.0 3.11:7.4.4 3.9:8.4.2 3.10:9.2.0 3.12:9.2.0 3.13:9.2.0})

# Keeps the entries whose PYTHON (field 1) or PYTEST (field 2) is in a
# space-separated filter; an empty filter keeps everything.
filter() {
    local field="$1" wanted="$2" entry kept=()
    [[ -z "$wanted" ]] && return 0
    for entry in "${matrix[@]}"; do
        local value="${entry%%:*}"
        [[ $field == 2 ]] && value="${entry#*:}"
        [[ " $wanted " == *" $value "* ]] && kept+=("$entry")
    done
    matrix=("${kept[@]+"${kept[@]}"}")
}
filter 1 "${SHOAL_TEST_PYTHONS:-}"
filter 2 "${SHOAL_TEST_PYTEST_VERSIONS:-}"
if [[ ${#matrix[@]} == 0 ]]; then
    echo "scripts/test.sh: no matrix entry is left after SHOAL_TEST_PYTHONS/SHOAL_TEST_PYTEST_VERSIONS" >&2
    exit 2
fi

# The interpreter of a minor version (3.12), or nothing.
find_python() {
    local minor="$1" candidates=() candidate root
    if command -v pyenv >/dev/null 2>&1; then
        candidate="$(pyenv prefix "$minor" 2>/dev/null | head -n 1)" && candidates+=("$candidate/bin/python$minor")
        root="$(pyenv root)"
        while IFS= read -r candidate; do
            candidates+=("$candidate/bin/python$minor")
        done < <(compgen -G "$root/versions/$minor.[0-9]*" | sort -V -r)
    fi
    candidate="$(command -v "python$minor" 2>/dev/null)" && candidates+=("$candidate")
    for candidate in "${candidates[@]+"${candidates[@]}"}"; do
        # A pyenv shim of a version not selected fails here, so it is passed over.
        if [[ -x "$candidate" ]] &&
            [[ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" == "$minor" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# The packages of an entry's venv, pinned. junitparser reads shoal's and
# pytest's JUnit files in the tests; jsonschema checks shoal's JSON reports
# against docs/json-report.schema.json; pytest-cov with coverage.py is
# measured by the --cov tests (coverage 7.17 needs Python 3.11, 7.11 3.10:
# older Pythons get the newest coverage that installs there).
packages() {
    local python_minor="$1" pytest_version="$2" coverage=7.17.5
    case "$python_minor" in
        3.9) coverage=7.10.7 ;;
        3.10) coverage=7.16.2 ;;
    esac
    echo "pytest==$pytest_version junitparser==4.0.2 jsonschema==4.23.0 pytest-cov==7.1.0 coverage==$coverage"
    # pytest-xdist rides along with pytest 9: tests check that a user's
    # `-n auto` in addopts does not start xdist inside shoal's workers, and
    # compare shoal's output with xdist's.
    [[ "$pytest_version" == 9.* ]] && echo "pytest-xdist==3.8.0"
    return 0
}

venv_of() { echo ".venv-test/py$1-pytest-$2"; }

# Whether an entry's venv is there, on the right Python, with the pins.
venv_ready() {
    local venv
    venv="$(venv_of "$1" "$2")"
    # shellcheck disable=SC2046
    "$venv/bin/python" - "$1" $(packages "$1" "$2") <<'PY' 2>/dev/null
import sys, importlib.metadata
minor, pins = sys.argv[1], [pin.split("==") for pin in sys.argv[2:]]
sys.exit("%d.%d" % sys.version_info[:2] != minor
         or any(importlib.metadata.version(name) != version for name, version in pins))
PY
}

# Every interpreter first: a missing one stops the run before anything else.
to_set_up=()
for entry in "${matrix[@]}"; do
    python_minor="${entry%%:*}" pytest_version="${entry#*:}"
    venv_ready "$python_minor" "$pytest_version" && continue
    if ! base="$(find_python "$python_minor")"; then
        echo "scripts/test.sh: Python $python_minor, which the matrix names, is not installed" \
            "(not in pyenv, no python$python_minor on PATH)" >&2
        exit 1
    fi
    to_set_up+=("$entry=$base")
done

# The venvs are set up in parallel, while cargo builds the tests.
mkdir -p .venv-test
pids=()
for item in "${to_set_up[@]+"${to_set_up[@]}"}"; do
    entry="${item%%=*}" base="${item#*=}"
    python_minor="${entry%%:*}" pytest_version="${entry#*:}"
    venv="$(venv_of "$python_minor" "$pytest_version")"
    wanted="$(packages "$python_minor" "$pytest_version" | tr '\n' ' ')"
    echo "setting up $venv with $base ($wanted)" >&2
    (
        rm -rf "$venv"
        "$base" -m venv "$venv"
        # shellcheck disable=SC2086
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $wanted
    ) >"$venv.log" 2>&1 &
    pids+=("$!:$venv")
done
# Third-party plugins (pytest-django, pytest-randomly, ...) get their own
# venv, and the pytest-django tests a PostgreSQL from Debian's package.
scripts/postgres.sh install
# The work-queue tests start their own redis-server (Debian's package).
scripts/redis.sh install
SHOAL_TEST_PLUGINS_PYTHON="$PWD/$(scripts/plugins_venv.sh)"
export SHOAL_TEST_PLUGINS_PYTHON
build_status=0
cargo test --workspace --locked --no-run || build_status=$?
for item in "${pids[@]+"${pids[@]}"}"; do
    if ! wait "${item%%:*}"; then
        echo "scripts/test.sh: setting up ${item#*:} failed:" >&2
        cat "${item#*:}.log" >&2
        exit 1
    fi
done
[[ $build_status == 0 ]] || exit "$build_status"

# The integration-test modules a later matrix entry runs (as cargo test
# filters). The third-party plugins' tests use their own venv: they run
# once, with the first entry. Another pytest on the first entry's Python
# runs what pytest's version changes (its options and output, collection,
# reports, the worker plugin's hooks); the newest and oldest other Pythons
# run what the interpreter changes (fork and spawn, the zygote, signals,
# crashes, coverage's tracer, --affected's recorder, the plugin's footprint); the Pythons between
# them run a smoke set of the same.
later_entry_modules() {
    local entry="$1" python="${1%%:*}" newest oldest
    local pytest_sensitive="workers:: split:: xdist_surface:: footprint:: pytest_cli:: parity::
        output_shape:: passthrough:: terminal:: junit:: control:: stopping::"
    local python_sensitive="workers:: split:: crash:: robustness:: xdist_surface:: footprint:: fork_hazards::
        interpreters:: coverage:: stopping:: affected::"
    local smoke="workers:: footprint:: interpreters:: xdist_surface::"
    if [[ "$python" == "${matrix[0]%%:*}" ]]; then
        echo $pytest_sensitive
        return
    fi
    newest="$(printf '%s\n' "${matrix[@]%%:*}" | sort -V | tail -n 1)"
    oldest="$(printf '%s\n' "${matrix[@]%%:*}" | sort -V | head -n 1)"
    if [[ "$python" == "$newest" || "$python" == "$oldest" ]]; then
        echo $python_sensitive
    else
        echo $smoke
    fi
}

results=()
failed=0
unit="${SHOAL_TEST_UNIT:-1}"
for index in "${!matrix[@]}"; do
    entry="${matrix[$index]}"
    interpreter="$PWD/$(venv_of "${entry%%:*}" "${entry#*:}")/bin/python"
    echo "== tests on Python ${entry%%:*} with pytest ${entry#*:} ($interpreter)" >&2
    start=$SECONDS
    status=0
    # The first entry runs everything. Later entries run the modules whose
    # behaviour depends on what differs in them (see `later_entry_modules`):
    # that keeps CI's matrix well within its time.
    filters=()
    if [[ $index != 0 ]]; then
        read -r -a filters <<<"$(later_entry_modules "$entry")"
    fi
    if [[ $unit != 0 ]]; then
        SHOAL_TEST_PYTHON="$interpreter" cargo test --workspace --locked -- "${filters[@]+"${filters[@]}"}" || status=$?
        unit=0
    else
        SHOAL_TEST_PYTHON="$interpreter" cargo test --locked -p shoal --test it -- "${filters[@]+"${filters[@]}"}" || status=$?
    fi
    verdict=passed
    if [[ $status != 0 ]]; then
        verdict="FAILED (exit $status)"
        failed=1
    fi
    results+=("Python ${entry%%:*}, pytest ${entry#*:}: $verdict in $((SECONDS - start))s")
done

echo "== matrix" >&2
printf '   %s\n' "${results[@]}" >&2
exit $failed
