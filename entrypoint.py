#!/usr/bin/env -S python3 -I
"""The Docker action's entry point: hands the ``INPUT_*`` environment to :mod:`mlcheck.action.main`.

Everything else (event, install, run, outputs, summary, file ownership) lives in the package,
where it is tested.

It runs as root with the write token, and ``HOME`` (``/github/home``) belongs to the runner's
user, which is the uid the project under test runs as: Python must start isolated (``-I``: no
user site, no ``PYTHON*`` variables, not the current folder on ``sys.path``), or a ``.pth``
the project planted in ``HOME`` during one step would run here in the next. The image's build
writes the interpreter's absolute path into the first line; anything else is refused.
"""

import sys

if not sys.flags.isolated:
    print(
        "::error::mlcheck: entrypoint.py must run isolated: python3 -I entrypoint.py",
        flush=True,
    )
    sys.exit(2)

from mlcheck.action.main import main

if __name__ == "__main__":
    sys.exit(main())
