"""Every sentence the PR comment and the tracking issue say that is not a test's own text.

Headings and causes the sections use, and the words of the scheduler (GPU run scheduled or
refused), the publisher (results refused, the PR moved on, the nightly intro) and the tracking
issue (its title and what it is). Change how mlcheck talks here; the modules that write to
GitHub only call these functions.
"""

from __future__ import annotations

from ..digest import (
    Category,
)

HEADINGS = {
    Category.NEW: "🆕 New failures",
    Category.UNCOMPARED: "❌ Failures",
    Category.ON_BASE: "🔁 Already failing on base",
    Category.FLAKY: "🎲 Flaky (passed on rerun)",
    Category.INFRA: "🏗️ Infrastructure",
}


# One line per kind: what went wrong, and what to do about it.
INFRA_CAUSES: dict[str, tuple[str, str]] = {
    "hub": (
        "model files were not in the local cache, or the hub refused or failed a request",
        "run `mlcheck cache warm` before the tests (the cache of what mlcheck.lock names); "
        "a 429/5xx passes on retry",
    ),
    "oom": (
        "out of memory (accelerator, or a worker killed by the OOM killer)",
        "declare what the test needs with `@pytest.mark.gpu(min_memory_gb=...)` or use a bigger "
        "runner",
    ),
    "device": (
        "accelerator runtime, driver or NCCL error (not out of memory), or no accelerator",
        "check the runner's GPU and driver (`nvidia-smi`), then rerun on a healthy runner",
    ),
    "crash": (
        "the test's worker process died (segfault, abort or killed)",
        "rerun the test alone (`pytest -p no:xdist NODEID`) to see how it dies",
    ),
    "timeout": (
        "the test ran past its time limit",
        "raise the limit (`@pytest.mark.timeout(...)`) or find what got slow",
    ),
}
