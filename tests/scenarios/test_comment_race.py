"""The PR comment's section update under concurrent publishers (local GitHub server).

The fast job, the GPU publish job and the scheduler can write the same sticky comment at
once; GitHub has no conditional write for comments, so a publisher whose read came before
another's write can land a stale body after it. ``update_section`` reads, merges, writes and
then verifies until its section and the sections it read from the others are there.
"""

from __future__ import annotations

import threading

import pytest
from github_server import ACTIONS_BOT, Fault, Faults, GitHubServer

from mlcheck.github import GitHubClient
from mlcheck.publish.comment import update_section
from mlcheck.report import sticky

REPO = "octo/proj"
KEYS = ("schedule", "fast", "real,gpu", "nightly")  # the publishers that share a PR comment


def race(gh: GitHubServer, *, rounds: int, settle: float) -> list[str]:
    """Every publisher writes its section ``r<round>`` at once, ``rounds`` times.

    Returns what was wrong at the end of each round: a section that is not the round's value
    (lost to a stale write), or more than one sticky comment.
    """
    number = gh.state.add_pull()
    barrier = threading.Barrier(len(KEYS))
    problems: list[str] = []
    failures: list[BaseException] = []

    def publisher(key: str) -> None:
        with GitHubClient(gh.token, api_url=gh.url, backoff=0.001, max_wait=1.0) as client:
            for r in range(rounds):
                try:
                    barrier.wait()
                    update_section(
                        client, REPO, number, key, f"r{r}", author=ACTIONS_BOT, settle=settle
                    )
                    barrier.wait()  # every publisher has returned: the round is over
                    if key == KEYS[0]:
                        found = [
                            c
                            for c in gh.state.comments_on(number)
                            if sticky.is_sticky(str(c["body"]))
                        ]
                        if len(found) != 1:
                            problems.append(f"round {r}: {len(found)} sticky comments")
                        sections = sticky.parse_sections(str(found[-1]["body"]))
                        problems.extend(
                            f"round {r}: section {k!r} is {sections.get(k)!r}"
                            for k in KEYS
                            if sections.get(k) != f"r{r}"
                        )
                    barrier.wait()
                except BaseException as exc:
                    failures.append(exc)
                    barrier.abort()
                    return

    threads = [threading.Thread(target=publisher, args=(key,)) for key in KEYS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [f for f in failures if not isinstance(f, threading.BrokenBarrierError)], failures
    return problems


SETTLE = 0.06


@pytest.mark.slow
def test_concurrent_publishers_never_lose_a_section() -> None:
    """Four publishers, 8 rounds, all at once, half of the writes in flight for 1.5 x settle
    (a slow GitHub): at the end of every round every section holds that round's value, in one
    comment. Without the verify rounds (``update_section`` returning after the primitive's one
    re-read, at most 1 x settle after its write) stale writes land unseen and sections are lost
    in every run."""
    with GitHubServer() as gh:
        gh.faults = Faults(
            rate=0.5,
            kinds=(Fault.slow(1.5 * SETTLE),),
            only=lambda op: op.startswith("PATCH "),
            seed=9,
        )
        problems = race(gh, rounds=8, settle=SETTLE)
        assert gh.faults.injected["slow:"] > 8  # the slow writes really happened
        gh.assert_clean()
    assert problems == []


def test_a_section_lost_after_the_write_is_put_back() -> None:
    """A stale body (read before our write) lands right after our write and its re-read: the
    verify round sees our section gone and a section of another job gone, and writes both back."""
    with GitHubServer() as gh, GitHubClient(gh.token, api_url=gh.url, backoff=0.001) as client:
        number = gh.state.add_pull()
        update_section(client, REPO, number, "schedule", "scheduled", settle=0)
        stale = sticky.build_body({"fast": "old"})  # neither "schedule" nor the new "fast"
        lists = 0

        def clobber(op: str, state: object) -> None:
            nonlocal lists
            if op.startswith("GET /repos/{owner}/{repo}/issues/{issue_number}/comments"):
                lists += 1
                if lists == 2:  # after the primitive's re-read: the stale write lands
                    for c in gh.state.comments_on(number):
                        c["body"] = stale

        gh.after_request.append(clobber)
        update_section(client, REPO, number, "fast", "new", settle=SETTLE / 2)
        gh.after_request.clear()
        body = str(gh.state.comments_on(number)[-1]["body"])
        assert lists > 2  # the stale write landed
        assert sticky.parse_sections(body) == {"schedule": "scheduled", "fast": "new"}
