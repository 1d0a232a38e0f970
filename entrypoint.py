#!/usr/bin/env python3
"""The Docker action's entry point: hands the ``INPUT_*`` environment to :mod:`mlcheck.action`.

Everything else (event, install, run, outputs, summary, file ownership) lives in the package,
where it is tested.
"""

import sys

from mlcheck.action import main

if __name__ == "__main__":
    sys.exit(main())
