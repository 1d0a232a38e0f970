"""Publish results produced elsewhere: the sticky PR comment, the tracking issue, the job summary.

- :mod:`.job` — :func:`publish`: what goes where for each event;
- :mod:`.comment` — the PR comment's sections, written by the one sticky loop
  (:func:`~mlcheck.publish.comment.update_section`);
- :mod:`.tracking` — the tracking issue (nightly report, base digests);
- :mod:`.options` — options, counts, outputs, the section a run's results may claim;
- :mod:`.outputs` — the report files a run leaves in its folder, and the render context from
  the Actions environment (``mlcheck run``, ``mlcheck report`` and the action share them).

``mlcheck publish`` runs in a job that has a write token but never ran the code under test: the
GPU workflow's ``publish`` job (the GPU job ran PR code with no write token), the fork-safe
``workflow_run`` publisher (the fork's run had a read-only token), a merge job after matrix
shards. The results it reads were written by code that whoever opened the PR controls, so they
are **untrusted data**: :func:`load_untrusted` refuses symbolic links, files over
:data:`MAX_RESULTS_BYTES`, more than :data:`MAX_TESTS` tests and anything that does not match
``mlcheck/schema/results.schema.json`` (``jsonschema_rs``, after a bound on the number of
values), and every string reaches GitHub through the renderer
(:mod:`mlcheck.report`), which redacts and escapes it. Where the publisher knows which section
the results belong to (a dispatched GPU run: its ``tier`` input; a ``workflow_run`` publisher:
``fast`` unless told), the results cannot choose another one, so a PR's GPU job cannot
overwrite the fast section with a fake green one.

Where the base digest lives (for "new failure" vs "already failing on base"): in a hidden
section of the **tracking issue**, the one issue mlcheck keeps per repository (found by
:data:`TRACKING_MARKER` and by its author, so nobody else can forge it). The nightly run writes
the digests of every tier there; a push to the default branch replaces its own tier's digest.
Why there and not in an artifact or a check run:

- one read for a PR run (``GET /issues?creator=...``, one page), so the common PR publish stays
  at 4 requests; an artifact costs a runs query, an artifacts query and a zip download;
- readable with the read-only token of fork PRs and with ``issues: read`` only; artifacts
  expire (90 days at most, often 1-7), and downloading them needs ``actions: read``;
- a check run's output is tied to a commit, so finding "the last completed run on the base
  branch" would mean walking commits; the issue is one place, always current;
- it is also where the nightly report goes, so the "new since the last nightly" comparison
  reads the previous nightly's digests from the same body it rewrites (no extra request).

The cost: pushes to the default branch and the nightly need ``issues: write``; concurrent
writers of the issue (a push and the nightly finishing together) are last-writer-wins for
the whole body, which at worst leaves one tier's base digest one run old.

>>> from mlcheck.results.merge import merge_sections
>>> from mlcheck.results.schema import RunResults, RunInfo, TestResult, Outcome
>>> r = RunResults(RunInfo(), (TestResult("t::a", Outcome.FAILED),))
>>> counts(merge_sections([r]), {}).failed
1
"""

from ..results.untrusted import (
    MAX_RESULTS_BYTES,
    MAX_TESTS,
    Limits,
    find_results_files,
    load_untrusted,
    validate,
)
from .comment import head_moved_note, publish_refusal
from .job import publish
from .options import (
    Counts,
    PublishOptions,
    PublishResult,
    counts,
    force_section,
    resolve_author,
)
from .tracking import (
    BASE_KEY,
    NIGHTLY_KEY,
    TRACKING_MARKER,
    base_digests,
    find_tracking_issue,
    issue_body,
    issue_sections,
)

__all__ = [
    "BASE_KEY",
    "MAX_RESULTS_BYTES",
    "MAX_TESTS",
    "NIGHTLY_KEY",
    "TRACKING_MARKER",
    "Counts",
    "Limits",
    "PublishOptions",
    "PublishResult",
    "base_digests",
    "counts",
    "find_results_files",
    "find_tracking_issue",
    "force_section",
    "head_moved_note",
    "issue_body",
    "issue_sections",
    "load_untrusted",
    "publish",
    "publish_refusal",
    "resolve_author",
    "validate",
]
