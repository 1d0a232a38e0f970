"""The behaviour behind each operation (the endpoints mlcheck calls), on the server's state."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .spec import DOCS
from .state import Identity

if TYPE_CHECKING:
    from .server import GitHubServer


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)


def error_body(message: str) -> dict[str, str]:
    return {"message": message, "documentation_url": DOCS}


class Routes:
    """The behaviour behind each operation, on ``app.state`` (called under ``app.lock``)."""

    def __init__(
        self, app: GitHubServer, who: Identity, params: dict[str, Any], body: Any, host: str
    ) -> None:
        self.app = app
        self.state = app.state
        self.who = who
        self.params = params
        self.body = body

    def dispatch(self, method: str, template: str) -> tuple[int, Any, Iterable[tuple[str, str]]]:
        if "owner" in self.params and (
            f"{self.params['owner']}/{self.params['repo']}" != self.state.full_name
        ):
            raise ApiError(404, "Not Found")
        handler = {
            "GET /user": self.get_user,
            "GET /repos/{owner}/{repo}": self.get_repo,
            "GET /repos/{owner}/{repo}/issues": self.list_issues,
            "POST /repos/{owner}/{repo}/issues": self.create_issue,
            "GET /repos/{owner}/{repo}/issues/{issue_number}": self.get_issue,
            "PATCH /repos/{owner}/{repo}/issues/{issue_number}": self.update_issue,
            "GET /repos/{owner}/{repo}/issues/{issue_number}/comments": self.list_comments,
            "POST /repos/{owner}/{repo}/issues/{issue_number}/comments": self.create_comment,
            "GET /repos/{owner}/{repo}/issues/comments/{comment_id}": self.get_comment,
            "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}": self.update_comment,
            "DELETE /repos/{owner}/{repo}/issues/comments/{comment_id}": self.delete_comment,
            "DELETE /repos/{owner}/{repo}/issues/{issue_number}/labels/{name}": self.remove_label,
            "GET /repos/{owner}/{repo}/pulls": self.list_pulls,
            "GET /repos/{owner}/{repo}/pulls/{pull_number}": self.get_pull,
            "GET /repos/{owner}/{repo}/commits/{commit_sha}/pulls": self.pulls_for_commit,
            "GET /repos/{owner}/{repo}/collaborators/{username}/permission": self.permission,
            "POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches": (
                self.dispatch_workflow
            ),
            "GET /repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs": self.list_runs,
            "GET /repos/{owner}/{repo}/actions/runs/{run_id}/artifacts": self.list_artifacts,
            "GET /repos/{owner}/{repo}/actions/artifacts/{artifact_id}/{archive_format}": (
                self.download_artifact
            ),
        }[f"{method} {template}"]
        return handler()

    # -- helpers -----------------------------------------------------------------------------------

    def need(self, scope: str) -> None:
        if scope not in self.who.write:
            raise ApiError(403, "Resource not accessible by integration")

    def issue_or_404(self, number: int) -> dict[str, Any]:
        issue = self.state.issues.get(number)
        if issue is None:
            raise ApiError(404, "Not Found")
        return issue

    def scope_for(self, issue: dict[str, Any]) -> str:
        return "pull_requests" if issue["is_pr"] else "issues"

    def page(self, items: list[Any], path: str) -> tuple[int, Any, list[tuple[str, str]]]:
        per_page = min(int(self.params.get("per_page", 30)), 100)
        page = int(self.params.get("page", 1))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        query = {
            k: v
            for k, v in self.params.items()
            if k
            not in ("owner", "repo", "page", "issue_number", "commit_sha", "workflow_id", "run_id")
        }
        query["per_page"] = per_page

        def link(n: int) -> str:
            rest = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query.items())
            return f"<{self.app.url}{path}?{rest}&page={n}>"

        rels = []
        if page < last:
            rels += [f'{link(page + 1)}; rel="next"', f'{link(last)}; rel="last"']
        if page > 1:
            rels += [f'{link(1)}; rel="first"', f'{link(page - 1)}; rel="prev"']
        return 200, chunk, [("Link", ", ".join(rels))] if rels else []

    def repo_path(self) -> str:
        return f"/repos/{self.state.full_name}"

    # -- operations

    def get_user(self) -> tuple[int, Any, list[tuple[str, str]]]:
        if self.who.app:
            raise ApiError(403, "Resource not accessible by integration")
        user = self.app.spec.fill(
            {"$ref": self.app.spec.schema_name("public-user")},
            {
                **self.app.user(self.who.login),
                "name": None,
                "company": None,
                "blog": None,
                "location": None,
                "email": None,
                "bio": None,
                "hireable": None,
            },
        )
        return 200, user, []

    def get_repo(self) -> tuple[int, Any, list[tuple[str, str]]]:
        return 200, self.app.repository("full-repository"), []

    def list_issues(self) -> tuple[int, Any, list[tuple[str, str]]]:
        want_state = self.params.get("state", "open")
        labels = set(filter(None, self.params.get("labels", "").split(",")))
        creator = self.params.get("creator")
        found = [
            i
            for i in self.state.issues.values()
            if (want_state == "all" or i["state"] == want_state)
            and labels <= set(i["labels"])
            and (creator is None or i["user"] == creator)
        ]
        found.sort(
            key=lambda i: i["number"], reverse=self.params.get("direction", "desc") == "desc"
        )
        status, chunk, headers = self.page(found, self.repo_path() + "/issues")
        return status, [self.app.issue(i) for i in chunk], headers

    def create_issue(self) -> tuple[int, Any, list[tuple[str, str]]]:
        self.need("issues")
        labels = [
            lab if isinstance(lab, str) else lab["name"] for lab in self.body.get("labels", [])
        ]
        number = self.state.add_issue(
            str(self.body["title"]), self.body.get("body") or "", self.who.login, labels=labels
        )
        return 201, self.app.issue(self.state.issues[number]), []

    def get_issue(self) -> tuple[int, Any, list[tuple[str, str]]]:
        return 200, self.app.issue(self.issue_or_404(self.params["issue_number"])), []

    def update_issue(self) -> tuple[int, Any, list[tuple[str, str]]]:
        issue = self.issue_or_404(self.params["issue_number"])
        self.need(self.scope_for(issue))
        for key in ("title", "body", "state"):
            if key in self.body and self.body[key] is not None:
                issue[key] = self.body[key]
        issue["updated_at"] = self.state.now()
        issue["closed_at"] = issue["updated_at"] if issue["state"] == "closed" else None
        return 200, self.app.issue(issue), []

    def list_comments(self) -> tuple[int, Any, list[tuple[str, str]]]:
        number = self.params["issue_number"]
        self.issue_or_404(number)
        status, chunk, headers = self.page(
            self.state.comments_on(number), f"{self.repo_path()}/issues/{number}/comments"
        )
        return status, [self.app.comment(c) for c in chunk], headers

    def _check_body(self) -> str:
        body = self.body["body"]
        if len(body) > 65536:
            raise ApiError(422, "Validation Failed: body is too long (maximum is 65536 characters)")
        return body

    def create_comment(self) -> tuple[int, Any, list[tuple[str, str]]]:
        number = self.params["issue_number"]
        issue = self.issue_or_404(number)
        self.need(self.scope_for(issue))
        comment_id = self.state.add_comment(number, self._check_body(), self.who.login)
        comment = self.app.comment(self.state.comments[comment_id])
        return 201, comment, [("Location", comment["url"])]

    def comment_or_404(self) -> dict[str, Any]:
        comment = self.state.comments.get(self.params["comment_id"])
        if comment is None:
            raise ApiError(404, "Not Found")
        return comment

    def get_comment(self) -> tuple[int, Any, list[tuple[str, str]]]:
        return 200, self.app.comment(self.comment_or_404()), []

    def update_comment(self) -> tuple[int, Any, list[tuple[str, str]]]:
        comment = self.comment_or_404()
        self.need(self.scope_for(self.state.issues[comment["issue"]]))
        comment["body"] = self._check_body()
        comment["updated_at"] = self.state.now()
        return 200, self.app.comment(comment), []

    def delete_comment(self) -> tuple[int, Any, list[tuple[str, str]]]:
        comment = self.comment_or_404()
        self.need(self.scope_for(self.state.issues[comment["issue"]]))
        del self.state.comments[comment["id"]]
        return 204, None, []

    def remove_label(self) -> tuple[int, Any, list[tuple[str, str]]]:
        number = self.params["issue_number"]
        issue = self.issue_or_404(number)
        self.need(self.scope_for(issue))
        name = self.params["name"]
        if name not in issue["labels"]:
            raise ApiError(404, "Label does not exist")
        issue["labels"].remove(name)
        self.state.removed_labels.append((number, name))
        return 200, [self.app.label(n) for n in issue["labels"]], []

    def get_pull(self) -> tuple[int, Any, list[tuple[str, str]]]:
        number = self.params["pull_number"]
        if number not in self.state.pulls:
            raise ApiError(404, "Not Found")
        return 200, self.app.pull(number), []

    def list_pulls(self) -> tuple[int, Any, list[tuple[str, str]]]:
        want_state = self.params.get("state", "open")
        head = self.params.get("head")
        found = [
            n
            for n, p in sorted(self.state.pulls.items(), reverse=True)
            if want_state in ("all", self.state.issues[n]["state"])
            and (head is None or f"{p['head_repo'].split('/')[0]}:{p['head_ref']}" == head)
        ]
        status, chunk, headers = self.page(found, f"{self.repo_path()}/pulls")
        return status, [self.app.pull(n, "pull-request-simple") for n in chunk], headers

    def pulls_for_commit(self) -> tuple[int, Any, list[tuple[str, str]]]:
        sha = self.params["commit_sha"]
        # Like GitHub: commits that only live in a fork are not associated with its PR here.
        found = [
            n
            for n, p in sorted(self.state.pulls.items())
            if p["head_sha"] == sha and p["head_repo"] == self.state.full_name
        ]
        status, chunk, headers = self.page(found, f"{self.repo_path()}/commits/{sha}/pulls")
        return status, [self.app.pull(n, "pull-request-simple") for n in chunk], headers

    def permission(self) -> tuple[int, Any, list[tuple[str, str]]]:
        login = self.params["username"]
        role = self.state.collaborators.get(login)
        if role is None:
            if self.state.private:
                raise ApiError(404, f"{login} is not a user")
            role = "read"  # anyone can read a public repository
        permission = {"maintain": "write", "triage": "read"}.get(role, role)
        user = {
            **self.app.user(login),
            "permissions": {
                "admin": role == "admin",
                "maintain": role in ("admin", "maintain"),
                "push": permission in ("admin", "write"),
                "triage": role != "read",
                "pull": True,
            },
        }
        user["role_name"] = role
        return 200, {"permission": permission, "role_name": role, "user": user}, []

    def dispatch_workflow(self) -> tuple[int, Any, list[tuple[str, str]]]:
        self.need("actions")
        workflow = str(self.params["workflow_id"])
        if workflow not in self.state.workflows:
            raise ApiError(404, "Not Found")
        ref = self.body["ref"].removeprefix("refs/heads/")
        if ref not in self.state.branches:
            raise ApiError(422, f"No ref found for: {self.body['ref']}")
        inputs = self.body.get("inputs") or {}
        unexpected = sorted(set(inputs) - self.state.workflows[workflow])
        if unexpected:
            raise ApiError(422, f"Unexpected inputs provided: {unexpected}")
        if any(not isinstance(v, str) for v in inputs.values()):
            raise ApiError(422, "inputs values must be strings")
        self.state.dispatches.append(
            {
                "workflow": workflow,
                "ref": self.body["ref"],
                "inputs": dict(inputs),
                "by": self.who.login,
            }
        )
        return 204, None, []

    # -- workflow runs and artifacts (reading needs `actions: read`, which every token here has)

    def list_runs(self) -> tuple[int, Any, list[tuple[str, str]]]:
        workflow = str(self.params["workflow_id"])
        if workflow not in self.state.workflows:
            raise ApiError(404, "Not Found")
        want = self.params.get("status")
        found = [
            r
            for r in sorted(self.state.runs.values(), key=lambda r: r["id"], reverse=True)
            if r["workflow"] == workflow
            and self.params.get("branch", r["head_branch"]) == r["head_branch"]
            and self.params.get("event", r["event"]) == r["event"]
            and (want is None or want in (r["status"], r["conclusion"]))
        ]
        path = f"{self.repo_path()}/actions/workflows/{quote(workflow, safe='')}/runs"
        status, chunk, headers = self.page(found, path)
        runs = [self.app.workflow_run(r) for r in chunk]
        return status, {"total_count": len(found), "workflow_runs": runs}, headers

    def list_artifacts(self) -> tuple[int, Any, list[tuple[str, str]]]:
        run_id = self.params["run_id"]
        if run_id not in self.state.runs:
            raise ApiError(404, "Not Found")
        name = self.params.get("name")
        found = [
            a
            for a in sorted(self.state.artifacts.values(), key=lambda a: a["id"], reverse=True)
            if a["run"] == run_id and name in (None, a["name"])
        ]
        status, chunk, headers = self.page(
            found, f"{self.repo_path()}/actions/runs/{run_id}/artifacts"
        )
        artifacts = [self.app.artifact(a) for a in chunk]
        return status, {"total_count": len(found), "artifacts": artifacts}, headers

    def download_artifact(self) -> tuple[int, Any, list[tuple[str, str]]]:
        artifact = self.state.artifacts.get(self.params["artifact_id"])
        if artifact is None or self.params["archive_format"] != "zip":
            raise ApiError(404, "Not Found")
        if artifact["expired"]:
            raise ApiError(410, "Artifact has expired")
        # Like GitHub: a 302 to a short-lived signed URL, served off the API (here /_blobs/)
        return 302, None, [("Location", self.app.signed_url(artifact["id"]))]
