"""Run the `iterview` command line and stop it dead at a chosen point, for a test to `kill -9` from outside.

    stop_at.py MARKER MODULE:NAME COUNT -- <iterview arguments>

On the COUNT-th call of MODULE.NAME the process writes MARKER and then waits, doing nothing, for its SIGKILL:
the test knows exactly where the run was (mid-checkpoint, mid-instance) when the signal lands.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from iterview.cli import app


def main() -> None:
    marker, target, count, separator, *arguments = sys.argv[1:]
    assert separator == "--", __doc__
    module_name, name = target.split(":")
    module = importlib.import_module(module_name)
    real, calls = getattr(module, name), []

    def stopping(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(count):
            Path(marker).write_text(f"{target} call {count}\n")
            while True:
                time.sleep(60)
        return real(*args, **kwargs)

    setattr(module, name, stopping)
    app(args=arguments)


if __name__ == "__main__":
    main()
