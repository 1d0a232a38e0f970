"""`mlcheck add`: declare models in the manifest, lock them and fetch them, in one step."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EnvironmentProblem, HubError, UsageError
from ..project.manifest import NEEDS, find_root
from ..text import duration_text, plural

if TYPE_CHECKING:
    from ..project.lock import LockedModel
    from ..project.manifest import ModelSpec
    from ..project.manifest_edit import Change, Declaration

HELP = "declare models in pyproject.toml, lock them and fetch them into the cache"
DESCRIPTION = """\
Declare models in the project's manifest, lock them and fetch them, in one step:

  mlcheck add gpt2                                        # config files: fast-tier tests
  mlcheck add sentence-transformers/all-MiniLM-L6-v2 --needs weights      # the real tier
  mlcheck add --from-tests                                # the models the tests name

Each MODEL_ID goes into [tool.mlcheck.models] of pyproject.toml (or [models] of mlcheck.toml
when that is the project's manifest), edited in place: comments and formatting stay, and a
model already declared as asked changes nothing. Then it is pinned in mlcheck.lock (as by
`mlcheck lock`) and its files are downloaded (as by `mlcheck cache warm`) from HF_ENDPOINT
(token from HF_TOKEN). A model or revision that the hub does not have is not declared.

--from-tests reads the test files' source (it does not run them) for literal model ids passed
to models.config/random/empty/tokenizer, AutoConfig/AutoTokenizer/...Processor.from_pretrained
(needs config) and to models.real, the real_model marker, AutoModel...from_pretrained and
pipeline(model=...) (needs weights), adds those the manifest lacks, and lists the calls whose
id it cannot tell (a variable, an f-string, a temporary folder) with their file and line."""
EXIT_CODES = """\
exit codes: 0 declared (or already declared), locked and in the cache; 2 usage or environment
problem (no pyproject.toml or mlcheck.toml, not a model id, bad --needs or --task, invalid
manifest, model or revision not on the hub, hub unreachable)."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "add",
        help=HELP,
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="MODEL_ID",
        help='hub model ids ("org/name"); with --from-tests: test files or folders '
        "(default: tests/, else the project folder)",
    )
    parser.add_argument(
        "--needs",
        choices=NEEDS,
        default=None,
        help="config: config and tokenizer files (fast tier; the default for a new model); "
        "weights: those plus the safetensors weights (real tier)",
    )
    parser.add_argument(
        "--revision",
        default=None,
        metavar="REV",
        help="branch, tag or commit to pin (default: main, or what the manifest says)",
    )
    parser.add_argument(
        "--task",
        default=None,
        help="check that the model builds for this task (e.g. causal-lm, "
        "sequence-classification) and print the line for a first test",
    )
    parser.add_argument(
        "--from-tests",
        action="store_true",
        help="add the models the test files use (literal ids in models.* calls, real_model "
        "markers, from_pretrained and pipeline calls) that the manifest lacks",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="project folder with the manifest (default: found from cwd)",
    )
    parser.set_defaults(handler=_add)


def _add(args: argparse.Namespace) -> int:
    from ..project.manifest_edit import plan_declarations, write_declarations

    root = Path(args.root) if args.root is not None else find_root()
    declarations = _from_tests(args, root) if args.from_tests else _from_ids(args)
    if not declarations:
        return 0
    if args.task is not None:
        _check_task_name(args.task)
    changes = plan_declarations(root, declarations)
    for change in changes:
        if not change.changed:
            _say(f"{change.describe()}; nothing to change")
    # Ask the hub first: a model or revision it does not have is never declared.
    pins = _pins(root, changes)
    for path in write_declarations(changes):
        for change in changes:
            if change.changed and change.path == path:
                _say(change.describe())
    ids = [c.model_id for c in changes]
    _lock(root, pins)
    _warm(root, ids)
    if args.task is not None:
        for model_id in ids:
            _check_task(root, model_id, args.task)
    if not args.from_tests:  # (the tests already use them)
        _next_steps(changes, args.task)
    return 0


def _from_ids(args: argparse.Namespace) -> list[Declaration]:
    from ..project.manifest_edit import Declaration

    if not args.targets:
        raise UsageError("name the models to add (`mlcheck add org/name`), or use --from-tests")
    return [Declaration(m, revision=args.revision, needs=args.needs) for m in args.targets]


def _from_tests(args: argparse.Namespace, root: Path) -> list[Declaration]:
    from ..project.manifest_edit import Declaration
    from ..project.model_usage import scan

    extra = [f"--{n}" for n in ("needs", "revision", "task") if getattr(args, n) is not None]
    if extra:
        raise UsageError(
            f"--from-tests infers what each model needs; drop {', '.join(extra)} "
            "(or add the model by name: `mlcheck add MODEL_ID --needs weights`)"
        )
    if args.targets:
        paths = [Path(p) for p in args.targets]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise UsageError(f"no such test file or folder: {', '.join(missing)}")
    else:
        paths = [root / "tests"] if (root / "tests").is_dir() else [root]
    usage = scan(paths)
    found = ", ".join(f"{m} ({need})" for m, need in sorted(usage.models.items()))
    _say(
        f"read {plural(usage.files, 'test file')}: {plural(len(usage.models), 'model id')}"
        + (f": {found}" if found else "")
    )
    if usage.unresolved:
        _say(
            f"could not tell the model id of {plural(len(usage.unresolved), 'call')}; declare "
            "those with `mlcheck add MODEL_ID`:"
        )
        for site in usage.unresolved:
            code = f" {site.code}" if site.code else ""
            _say(f"  {_relative(site.path, root)}:{site.line}:{code}  ({site.why})")
    return [
        Declaration(m, needs=need, upgrade_only=True) for m, need in sorted(usage.models.items())
    ]


def _resolve(spec: ModelSpec) -> LockedModel:
    from huggingface_hub import constants

    from ..project.hub import resolve

    if constants.HF_HUB_OFFLINE:
        raise EnvironmentProblem(
            "HF_HUB_OFFLINE is set, and `mlcheck add` asks the hub which files to pin: run it "
            "without HF_HUB_OFFLINE (tests stay offline anyway); nothing was declared"
        )
    _say(f"resolving {spec.model_id}@{spec.revision} on {constants.ENDPOINT} ...")
    try:
        return resolve(spec)
    except HubError as exc:
        raise HubError(f"{exc}; nothing was declared") from None


def _pins(root: Path, changes: list[Change]) -> dict[str, LockedModel]:
    """The lock entry of each model to add: the current one when it still matches the
    declaration, else resolved on the hub now (before anything is written)."""
    from ..project.lock import read_lock

    lock = read_lock(root)
    pins = {}
    for change in changes:
        entry = lock.model(change.model_id) if lock is not None else None
        if entry is None or not entry.matches(change.new):
            entry = _resolve(change.new)  # new, changed, or declared by hand and not locked
        pins[change.model_id] = entry
    return pins


def _lock(root: Path, pins: dict[str, LockedModel]) -> None:
    """Pin the added models in mlcheck.lock; every other entry stays as it is (locking the rest
    of the manifest is `mlcheck lock`'s job, and another model's problem is not this one's)."""
    from ..project.lock import Lock, lock_path, read_lock, write_lock

    before = read_lock(root)
    lock = before or Lock()
    for entry in pins.values():
        if lock.model(entry.model_id) != entry:
            lock = lock.with_model(entry)
            _say(
                f"locked {entry.model_id}@{entry.revision} -> {entry.commit[:12]} "
                f"({plural(len(entry.files), 'file')}, {_mb(entry.size)})"
            )
    if lock != before:
        write_lock(root, lock)
        _say(f"wrote {lock_path(root)}")


def _warm(root: Path, model_ids: list[str]) -> None:
    from ..project.hub import warm

    report = warm(root, models=model_ids, only_missing=True, progress=sys.stderr.isatty())
    if report.nothing_to_do:
        _say(f"in the cache: {plural(report.present, 'file')} locked, nothing downloaded")
    else:
        _say(
            f"downloaded {plural(len(report.downloaded), 'file')} "
            f"({_mb(report.downloaded_bytes)}) in {duration_text(report.seconds)}; "
            f"{report.present} already in the cache"
        )


def _check_task_name(task: str) -> None:
    from ..models import TASKS

    if task not in TASKS:
        valid = ", ".join(sorted(t for t in TASKS if t is not None))
        raise UsageError(f"unknown --task {task!r}; valid tasks: {valid}")


def _check_task(root: Path, model_id: str, task: str) -> None:
    """The model's config, from the cache, has a transformers class for ``task``."""
    import transformers

    from ..models import TASKS
    from ..project.cache import locate

    auto = getattr(transformers, str(TASKS[task]))
    local = locate(model_id, root=root)
    config = transformers.AutoConfig.from_pretrained(
        str(local.path), local_files_only=True, trust_remote_code=local.trust_remote_code
    )
    mapping = auto._model_mapping
    if type(config) not in mapping:
        raise UsageError(
            f"{model_id} (model type {config.model_type!r}) has no {task} class in "
            f"transformers ({auto.__name__}); it is declared and fetched, pick another --task"
        )
    _say(f"{model_id}: task {task} builds {mapping[type(config)].__name__}")


def _next_steps(changes: list[Change], task: str | None) -> None:
    task_arg = f', task="{task}"' if task else ""
    for change in changes[:3]:
        model_id = change.new.model_id
        if change.new.needs == "weights":
            _say(
                f'use it: @pytest.mark.real_model("{model_id}") and '
                f'models.real("{model_id}"{task_arg}) (tier real: `mlcheck run --tier real`)'
            )
        else:
            _say(f'use it: models.random("{model_id}"{task_arg}) in a fast test (`mlcheck run`)')


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _say(line: str) -> None:
    print(line, flush=True)


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB"
