"""The GitHub client and the sticky-comment loop, against the local OpenAPI-checked server."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from github_server import ACTIONS_BOT, Fault, Faults, GitHubServer, Identity

from mlcheck.errors import (
    GitHubAuthError,
    GitHubError,
    GitHubNotFound,
    GitHubPermissionError,
    GitHubRateLimited,
    GitHubUnavailable,
    GitHubValidationFailed,
    StickyCommentConflict,
)
from mlcheck.github import GitHubClient
from mlcheck.publish.comment import StickyResult, update_section
from mlcheck.report import sticky


def update_sticky_section(*args: object, **kw: object) -> StickyResult:
    """The sticky loop (:func:`mlcheck.publish.comment.update_section`) as a workload of
    several kinds of requests; no settle wait by default: races are staged where tested."""
    kw.setdefault("settle", 0.0)
    return update_section(*args, **kw)  # type: ignore[arg-type]


REPO = "octo/proj"
LIST = "GET /repos/{owner}/{repo}/issues/{issue_number}/comments"
CREATE = "POST /repos/{owner}/{repo}/issues/{issue_number}/comments"
PATCH = "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}"
DELETE = "DELETE /repos/{owner}/{repo}/issues/comments/{comment_id}"


@pytest.fixture
def gh() -> Iterator[GitHubServer]:
    with GitHubServer() as server:
        yield server
        server.assert_clean()


def make_client(gh: GitHubServer, token: str | None = None, **kw: float) -> GitHubClient:
    options = {"backoff": 0.001, "max_wait": 2.0, "max_attempts": 6, **kw}
    return GitHubClient(gh.token if token is None else token, api_url=gh.url, **options)  # type: ignore[arg-type]


@pytest.fixture
def client(gh: GitHubServer) -> Iterator[GitHubClient]:
    with make_client(gh) as c:
        yield c


def stickies(gh: GitHubServer, number: int, author: str = ACTIONS_BOT) -> list[dict[str, object]]:
    return [
        c
        for c in gh.state.comments_on(number)
        if c["user"] == author and sticky.is_sticky(str(c["body"]))
    ]


# --- transport: headers, GHES, pagination


def test_every_request_pins_the_api_version_and_sends_the_token(
    gh: GitHubServer, client: GitHubClient
) -> None:
    assert client.get_repo(REPO).default_branch == "main"
    assert client.get_pull(REPO, gh.state.add_pull()).head_sha == "a" * 40
    assert {(e.api_version, e.token_sent) for e in gh.log} == {("2022-11-28", True)}


def test_github_enterprise_server_api_url_with_a_path_prefix() -> None:
    with GitHubServer(prefix="/api/v3") as ghes:
        assert ghes.url.endswith("/api/v3")
        number = ghes.state.add_pull()
        for i in range(130):
            ghes.state.add_comment(number, f"comment {i}", "alice")
        env = {"GITHUB_API_URL": ghes.url + "/", "GITHUB_TOKEN": ghes.token}
        with GitHubClient.from_env(environ=env, backoff=0.001) as client:
            comments = client.list_comments(REPO, number)
        assert [c.body for c in comments] == [f"comment {i}" for i in range(130)]
        assert ghes.count(LIST) == 2  # 100 + 30, following Link: rel="next" under /api/v3
        ghes.assert_clean()


def test_pagination_follows_link_headers(gh: GitHubServer, client: GitHubClient) -> None:
    number = gh.state.add_pull()
    for i in range(250):
        gh.state.add_comment(number, str(i), "alice")
    assert len(client.list_comments(REPO, number)) == 250
    assert gh.count(LIST) == 3


def test_links_off_the_api_host_are_not_followed(client: GitHubClient) -> None:
    with pytest.raises(GitHubError, match="off the API host"):
        list(client.paginate("https://evil.example/steal"))


# --- retries and rate limits


@pytest.mark.parametrize(
    "fault",
    [
        Fault.error(500),
        Fault.error(502),
        Fault.too_many(retry_after=0),
        Fault.secondary(retry_after=0),
        Fault.primary(reset_in=0),
        Fault.reset(),
        Fault.error(502, after=True),
    ],
    ids=["500", "502", "429", "secondary-403", "primary-403", "reset", "502-after-commit"],
)
def test_transient_faults_are_retried(gh: GitHubServer, client: GitHubClient, fault: Fault) -> None:
    number = gh.state.add_pull()
    gh.faults = Faults(script=[fault, fault])
    result = update_sticky_section(client, REPO, number, "fast", "3 passed", author=ACTIONS_BOT)
    assert result.comment.body == sticky.replace_section(None, "fast", "3 passed")
    assert len(stickies(gh, number)) == 1
    assert sum(1 for e in gh.log if e.fault) == 2


def test_retry_after_and_rate_limit_reset_are_honoured(gh: GitHubServer) -> None:
    gh.faults = Faults(script=[Fault.too_many(retry_after=1), Fault.primary(reset_in=1)])
    started = time.monotonic()
    with make_client(gh) as client:
        client.get_repo(REPO)
    assert time.monotonic() - started >= 1.0  # waited, instead of hammering the API
    assert gh.count() == 3


def test_a_wait_longer_than_max_wait_fails_fast_and_says_so(gh: GitHubServer) -> None:
    gh.faults = Faults(script=[Fault.secondary(retry_after=3600)])
    started = time.monotonic()
    with make_client(gh, max_wait=5) as client, pytest.raises(GitHubRateLimited, match="3600s"):
        client.get_repo(REPO)
    assert time.monotonic() - started < 1


def test_slow_answers_time_out_and_are_retried(gh: GitHubServer) -> None:
    gh.faults = Faults(script=[Fault.slow(0.6)])
    with make_client(gh, timeout=0.2) as client:
        assert client.get_repo(REPO).full_name == REPO
    time.sleep(0.5)  # the abandoned slow answer is logged when the server finishes it
    assert gh.count("GET /repos/{owner}/{repo}") == 2


def test_persistent_5xx_gives_up_with_a_typed_error(gh: GitHubServer) -> None:
    gh.faults = Faults(script=[Fault.error(503)] * 3)
    with make_client(gh, max_attempts=3) as client, pytest.raises(GitHubUnavailable) as err:
        client.get_repo(REPO)
    assert "after 3 attempts" in str(err.value) and gh.token not in str(err.value)


def test_unreachable_host_is_a_typed_error() -> None:
    with (
        GitHubClient("t0ken", api_url="http://127.0.0.1:9", max_attempts=2, backoff=0.001) as c,
        pytest.raises(GitHubUnavailable, match="ConnectError"),
    ):
        c.get_repo(REPO)


# --- errors that tell the user what to do


@pytest.fixture
def read_only(gh: GitHubServer) -> Iterator[GitHubClient]:
    token = gh.add_token("ghs_readonlyTOKEN", Identity(ACTIONS_BOT, write=frozenset()))
    with make_client(gh, token=token) as c:
        yield c


def test_missing_pull_requests_permission_names_the_fix(
    gh: GitHubServer, read_only: GitHubClient
) -> None:
    number = gh.state.add_pull()
    with pytest.raises(GitHubPermissionError, match=r"permissions: \{pull-requests: write\}") as e:
        update_sticky_section(read_only, REPO, number, "fast", "x")
    assert "workflow_run" in str(e.value)  # the fork PR way out
    assert e.value.status == 403


def test_missing_actions_and_issues_permissions_name_the_fix(
    gh: GitHubServer, read_only: GitHubClient
) -> None:
    with pytest.raises(GitHubPermissionError, match="actions: write"):
        read_only.dispatch_workflow(REPO, "mlcheck-gpu.yml", "main", {"sha": "a" * 40})
    with pytest.raises(GitHubPermissionError, match="issues: write"):
        read_only.create_issue(REPO, "Nightly", "body")


# README security model: the token never appears in error messages.
def test_bad_token_is_an_auth_error_that_does_not_echo_the_token(gh: GitHubServer) -> None:
    with make_client(gh, token="ghp_wrongTOKENvalue") as c, pytest.raises(GitHubAuthError) as e:
        c.get_repo(REPO)
    assert "ghp_wrongTOKENvalue" not in str(e.value) and "github-token" in str(e.value)
    with make_client(gh, token="") as anonymous, pytest.raises(GitHubAuthError):
        anonymous.get_repo(REPO)
    assert [e.token_sent for e in gh.log] == [True, False]


def test_not_found_is_typed(gh: GitHubServer, client: GitHubClient) -> None:
    with pytest.raises(GitHubNotFound):
        client.get_pull(REPO, 999)
    with pytest.raises(GitHubNotFound):
        client.get_repo("someone/else")


def test_the_server_refuses_requests_that_break_the_openapi_description(
    gh: GitHubServer, client: GitHubClient
) -> None:
    number = gh.state.add_pull()
    path = f"/repos/{REPO}/issues/{number}/comments"
    with pytest.raises(GitHubValidationFailed, match="'body' is a required property"):
        client.request("POST", path, json={"text": "typo in the field name"})
    with pytest.raises(GitHubValidationFailed, match="unknown query parameters"):
        client.request("GET", path, params={"per_pgae": 5})
    with pytest.raises(GitHubValidationFailed, match="is not one of"):
        client.request("GET", f"/repos/{REPO}/issues", params={"state": "opened"})
    with pytest.raises(GitHubNotFound, match="invalid path parameter"):
        client.request("GET", f"/repos/{REPO}/pulls/abc")
    assert not gh.state.comments


def test_the_server_catches_responses_that_break_the_openapi_description(gh: GitHubServer) -> None:
    number = gh.state.add_pull()
    good = gh.comment(gh.state.comments[gh.state.add_comment(number, "x", "alice")])
    pointer = gh.spec.schema_name("issue-comment")
    assert gh.spec.errors(good, pointer) == []
    assert gh.spec.errors({**good, "id": "1"}, pointer) == ["id: '1' is not of type 'integer'"]
    assert gh.spec.errors({**good, "user": None}, pointer) == []  # nullable-simple-user
    assert "openapi@23" in gh.spec.version


# --- PRs, permissions, labels, dispatch, issues


@pytest.mark.parametrize(
    ("role", "can_write"),
    [
        ("admin", True),
        ("maintain", True),
        ("write", True),
        ("triage", False),
        ("read", False),
        (None, False),
    ],
)
def test_collaborator_permission_comes_from_the_api(
    gh: GitHubServer, client: GitHubClient, role: str | None, can_write: bool
) -> None:
    if role:
        gh.state.collaborators["mona"] = role
    assert client.collaborator_permission(REPO, "mona").can_write is can_write


def test_remove_label_and_dispatch_send_what_github_expects(
    gh: GitHubServer, client: GitHubClient
) -> None:
    number = gh.state.add_pull(labels=["mlcheck:gpu", "bug"])
    assert client.remove_label(REPO, number, "mlcheck:gpu") is True
    assert client.remove_label(REPO, number, "mlcheck:gpu") is False  # already gone
    assert gh.state.removed_labels == [(number, "mlcheck:gpu")]
    inputs = {"sha": "a" * 40, "pr": str(number), "tier": "real,gpu"}
    client.dispatch_workflow(REPO, "mlcheck-gpu.yml", "main", inputs)
    assert gh.state.dispatches == [
        {"workflow": "mlcheck-gpu.yml", "ref": "main", "inputs": inputs, "by": ACTIONS_BOT}
    ]
    with pytest.raises(GitHubValidationFailed, match="Unexpected inputs"):
        client.dispatch_workflow(REPO, "mlcheck-gpu.yml", "main", {**inputs, "debug": "1"})
    with pytest.raises(GitHubNotFound):
        client.dispatch_workflow(REPO, "missing.yml", "main", inputs)


def test_issues_are_listed_by_creator_created_and_updated(
    gh: GitHubServer, client: GitHubClient
) -> None:
    # the calls the tracking issue is kept with (mlcheck/publish/tracking.py finds it)
    gh.state.add_issue("Fake tracker", "forged", user="mallory")
    gh.state.add_pull()
    first = client.create_issue(REPO, "mlcheck nightly", "2 failures", labels=("mlcheck",))
    assert first.author == ACTIONS_BOT and first.labels == ("mlcheck",)
    mine = client.list_issues(REPO, state="all", creator=client.viewer_login())
    assert [i.number for i in mine] == [first.number]  # not mallory's, not the PR
    closed = client.update_issue(REPO, first.number, body="all passed", state="closed")
    assert (closed.state, closed.body) == ("closed", "all passed")
    assert client.list_issues(REPO) == [client.list_issues(REPO, creator="mallory")[0]]
    assert gh.state.issues[1]["body"] == "forged"  # mallory's issue untouched


def test_viewer_login_for_a_personal_token(gh: GitHubServer) -> None:
    token = gh.add_token("ghp_personalTOKEN", Identity("mona", app=False))
    with make_client(gh, token=token) as c:
        assert c.viewer_login() == "mona"
        assert c.viewer_login() == "mona"
    assert gh.count("GET /user") == 1


# --- the sticky comment


def test_sticky_request_counts_per_path(gh: GitHubServer) -> None:
    """The figures in the README: requests per publish on each path."""
    number = gh.state.add_pull()
    gh.state.add_comment(number, "LGTM", "alice")
    costs = {}

    def publish(label: str, key: str, body: str, client: GitHubClient, **kw: str) -> str:
        before = gh.count()
        action = update_sticky_section(client, REPO, number, key, body, **kw).action
        costs[label] = gh.count() - before
        return action

    with make_client(gh) as client:
        assert publish("create (first publish, + GET /user)", "fast", "1", client) == "created"
        assert publish("update (common path)", "gpu", "2", client) == "updated"
        assert publish("unchanged", "gpu", "2", client) == "unchanged"
    with make_client(gh) as fresh:
        assert publish("update, new process (+ GET /user)", "fast", "3", fresh) == "updated"
        assert publish("update, author given", "fast", "4", fresh, author=ACTIONS_BOT) == "updated"
    first = stickies(gh, number)[0]
    for i in range(2):  # duplicates left by older runs
        gh.state.add_comment(number, sticky.build_body({"old": str(i)}), ACTIONS_BOT)
    with make_client(gh) as client:
        before = gh.count()
        result = update_sticky_section(client, REPO, number, "fast", "5", author=ACTIONS_BOT)
        costs["dedupe 3 -> 1"] = gh.count() - before
    assert costs == {
        "create (first publish, + GET /user)": 4,
        "update (common path)": 3,
        "unchanged": 1,
        "update, new process (+ GET /user)": 4,
        "update, author given": 3,
        "dedupe 3 -> 1": 5,
    }
    print("\nrequests per publish:", costs)
    assert result.deleted == (first["id"], first["id"] + 1)  # the newest was kept
    assert sticky.parse_sections(result.comment.body) == {"fast": "5", "gpu": "2", "old": "1"}


def test_duplicates_merge_into_the_newest_and_forged_comments_are_ignored(
    gh: GitHubServer, client: GitHubClient
) -> None:
    number = gh.state.add_pull()
    gh.state.add_comment(number, sticky.build_body({"fast": "old fast", "real": "r"}), ACTIONS_BOT)
    gh.state.add_comment(number, sticky.build_body({"fast": "newer fast"}), ACTIONS_BOT)
    forged = gh.state.add_comment(number, sticky.build_body({"gpu": "all passed!"}), "mallory")
    newest = gh.state.add_comment(number, sticky.build_body({"fast": "newest"}), ACTIONS_BOT)
    result = update_sticky_section(client, REPO, number, "gpu", "scheduled")
    assert result.comment.id == newest and len(result.deleted) == 2
    assert sticky.parse_sections(result.comment.body) == {
        "fast": "newest",
        "real": "r",
        "gpu": "scheduled",
    }
    assert [c["id"] for c in stickies(gh, number)] == [newest]
    assert gh.state.comments[forged]["body"] == sticky.build_body({"gpu": "all passed!"})


def test_an_oversized_section_still_posts(gh: GitHubServer, client: GitHubClient) -> None:
    number = gh.state.add_pull()
    update_sticky_section(client, REPO, number, "fast", "f" * 50_000)
    result = update_sticky_section(client, REPO, number, "gpu", "g" * 50_000)
    assert len(result.comment.body) <= sticky.MAX_BODY
    assert "section truncated" in sticky.parse_sections(result.comment.body)["gpu"]
    assert sticky.parse_sections(result.comment.body)["fast"] == "f" * 50_000


def test_the_token_never_shows_in_logs_messages_or_posts(
    gh: GitHubServer, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    number = gh.state.add_pull()
    gh.faults = Faults(rate=0.3, seed=7)
    messages = []
    with make_client(gh, max_attempts=2) as client:
        messages.append(repr(client))
        for i in range(10):
            try:
                update_sticky_section(client, REPO, number, "fast", f"leak {gh.token} {i}")
            except GitHubError as err:
                messages.append(str(err))
    gh.faults = Faults()
    with make_client(gh, token="ghp_bad" + gh.token) as bad, pytest.raises(GitHubAuthError) as e:
        bad.get_repo(REPO)
    messages.append(str(e.value))
    outputs = [caplog.text, *capsys.readouterr(), *messages]
    outputs += [str(c["body"]) for c in gh.state.comments.values()]
    assert stickies(gh, number), "nothing was posted"
    assert all(gh.token not in text for text in outputs)
    assert any("***" in text for text in outputs)


def race(
    gh: GitHubServer, *, serialise: bool, settle: float = 0.0, publishers: int = 8, rounds: int = 50
) -> dict[str, int]:
    """``publishers`` jobs each update their own section, all at once, ``rounds`` times."""
    number = gh.state.add_pull()
    group = threading.Lock()  # the workflow `concurrency` group, per PR
    barrier = threading.Barrier(publishers)
    stats = {"lost": 0, "max_comments": 0, "conflicts": 0, "extra_rounds": 0}
    stats_lock = threading.Lock()
    failures: list[BaseException] = []

    def publisher(i: int) -> None:
        with make_client(gh, max_wait=1) as client:
            for r in range(rounds):
                barrier.wait()
                try:
                    with group if serialise else contextlib.nullcontext():
                        result = update_sticky_section(
                            client, REPO, number, f"job{i}", f"r{r}", settle=settle
                        )
                    with stats_lock:
                        stats["extra_rounds"] += result.rounds - 1
                except StickyCommentConflict:
                    with stats_lock:
                        stats["conflicts"] += 1
                except BaseException as exc:
                    failures.append(exc)
                    barrier.abort()
                    raise
                barrier.wait()
                if i == 0:
                    found = stickies(gh, number)
                    sections = sticky.parse_sections(str(found[-1]["body"]))
                    stats["max_comments"] = max(stats["max_comments"], len(found))
                    stats["lost"] += sum(
                        sections.get(f"job{j}") != f"r{r}" for j in range(publishers)
                    )
                barrier.wait()

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(publishers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    return stats


@pytest.mark.slow
def test_concurrent_publishers_never_duplicate_and_lose_nothing_when_serialised(
    gh: GitHubServer,
) -> None:
    free = race(gh, serialise=False)
    settled = race(gh, serialise=False, settle=0.05, rounds=25)  # ~10x this server's cycle
    grouped = race(gh, serialise=True)
    print(
        f"\n8 publishers, sections lost: 50 rounds without concurrency group {free}; "
        f"25 rounds with settle=0.05 s {settled}; 50 rounds with the group {grouped}"
    )
    assert free["max_comments"] == settled["max_comments"] == grouped["max_comments"] == 1
    assert settled["lost"] <= free["lost"]
    assert grouped == {"lost": 0, "max_comments": 1, "conflicts": 0, "extra_rounds": 0}


@pytest.mark.slow
def test_thirty_percent_faults_over_200_publishes_leave_a_correct_comment(
    gh: GitHubServer,
) -> None:
    number = gh.state.add_pull()
    gh.faults = Faults(rate=0.3, seed=2024)
    expected: dict[str, str] = {}
    requests = 0
    with make_client(gh, max_attempts=10) as client:
        for i in range(200):
            key = ("fast", "real", "gpu")[i % 3]
            expected[key] = f"publish {i}"
            before = gh.count()
            update_sticky_section(client, REPO, number, key, expected[key], author=ACTIONS_BOT)
            requests += gh.count() - before
            found = stickies(gh, number)
            assert len(found) == 1, f"publish {i}: {len(found)} comments"
            assert sticky.parse_sections(str(found[0]["body"])) == expected
    injected = dict(gh.faults.injected)
    print(f"\n200 publishes at 30% faults: {requests} requests, faults {injected}")
    assert sum(injected.values()) > 100  # the faults really happened
    assert any(k.endswith(":after") for k in injected)  # including lost answers to writes


def test_a_publisher_that_keeps_losing_the_race_gives_up_with_advice(gh: GitHubServer) -> None:
    number = gh.state.add_pull()
    with make_client(gh) as client:
        update_sticky_section(client, REPO, number, "fast", "mine", author=ACTIONS_BOT)

        # Another job's stale write lands right after each of ours.
        def clobber(op: str, state: object) -> None:
            if op == PATCH:
                for c in gh.state.comments.values():
                    c["body"] = sticky.build_body({"gpu": "other"})

        gh.after_request.append(clobber)
        with pytest.raises(StickyCommentConflict, match="concurrency"):
            update_sticky_section(
                client, REPO, number, "fast", "new", author=ACTIONS_BOT, max_rounds=3
            )
    assert gh.count(PATCH) == 3


# README security model: the token is redacted before any text is cut.
def test_an_html_error_page_echoing_the_token_is_redacted_before_it_is_cut() -> None:
    """A proxy's HTML error page repeats the token so that the 200-character clip of the
    message would cut it mid-way: no piece of the token may reach the error message."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    token = "ghs_" + "Ab3" * 12  # 40 characters
    page = (
        "<html><body><p>" + "x" * 150 + f"Bad request with token {token}</p></body></html>"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(400)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with GitHubClient(token, api_url=url, max_attempts=1) as c, pytest.raises(Exception) as e:
            c.get_repo(REPO)
    finally:
        httpd.shutdown()
    assert page.decode().index(token) < 200 < page.decode().index(token) + len(token)
    said = str(e.value)
    assert "***" in said
    assert not any(token[i : i + 8] in said for i in range(len(token) - 7)), said
