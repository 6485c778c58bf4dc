"""shoal's private environment: the variables it hands this plugin, taken once.

The variables below are for this plugin and nobody else. They are read once,
when pytest imports the plugin, and removed, so a test (and every process it
starts) sees the environment the user gave, plus xdist's public variables
(PYTEST_XDIST_WORKER, ...) and shoal's documented ones (SHOAL_WORKER, ...).
The plugin's directory is taken back off ``PYTHONPATH`` and ``sys.path`` at
the same moment.
"""

import os
import sys

_PRIVATE_VARIABLES = (
    "SHOAL_CHANNEL_FD",
    "SHOAL_ZYGOTE_FD",
    "SHOAL_CONTROLLER_OUTPUT",
    "SHOAL_MEMORY_LIMIT_KIB",
    "SHOAL_COVERAGE_DIR",
    "SHOAL_AFFECTED_DIR",
    "SHOAL_SERIAL_MARKERS",
    "SHOAL_LAST_FAILED",
    "SHOAL_MAINARGV",
    "SHOAL_WORKERINPUT",
)

# The directory shoal put first on PYTHONPATH: it holds this package and
# shoal_coverage.
PLUGIN_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# shoal's private variables, by name, once take() has run (empty when this
# process was not started by shoal).
PRIVATE = {}


def take():
    """Reads and removes shoal's private variables into ``PRIVATE`` (and
    returns it), and takes the plugin's directory back off ``PYTHONPATH`` and
    ``sys.path`` (shoal put it first in ``PYTHONPATH`` so ``-p shoal_worker``
    could be imported). Every module of this package must be imported
    before."""
    taken = {name: os.environ.pop(name) for name in _PRIVATE_VARIABLES if name in os.environ}
    PRIVATE.update(taken)
    if not taken:
        return PRIVATE
    if taken.get("SHOAL_COVERAGE_DIR"):
        # Imported while its directory is still on sys.path.
        import shoal_coverage  # noqa: F401
    if taken.get("SHOAL_AFFECTED_DIR"):
        import shoal_affected  # noqa: F401
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if entries and os.path.abspath(entries[0] or ".") == PLUGIN_ROOT:
        if len(entries) > 1:
            os.environ["PYTHONPATH"] = os.pathsep.join(entries[1:])
        else:
            del os.environ["PYTHONPATH"]
    sys.path[:] = [entry for entry in sys.path if not (entry and os.path.abspath(entry) == PLUGIN_ROOT)]
    return PRIVATE
