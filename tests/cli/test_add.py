"""`mlcheck add`: the in-place manifest edit, the test-source scan, and declare + lock + fetch
against a real olah mirror (hubserver.py), then an offline real-tier run."""

# Fixtures imported from hubserver are redefined as test parameters, by design.
# ruff: noqa: F811

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hubserver import Hub, free_port, hub, hub_env, mlcheck, tiny_bert_dir  # noqa: F401

from mlcheck.cli import main
from mlcheck.models import ModelFactory
from mlcheck.project.lock import read_lock
from mlcheck.project.manifest import load_manifest
from mlcheck.project.manifest_edit import Declaration, plan_declarations, write_declarations
from mlcheck.project.model_usage import FACTORY_NEEDS, scan

# A user's pyproject.toml: comments, odd spacing, single quotes, a table after ours.
PYPROJECT = """\
[project]
name = 'my-model'   # keep this comment
dependencies = [
    "torch",  # CPU build in CI
]

[tool.mlcheck]
markers = { slow = "real" }

[tool.mlcheck.models]
# the encoder we ship
"org/encoder" = { revision = "v1", needs = "config" }   # aligned comment

[tool.ruff]
line-length = 100
"""


def declare(root: Path, *declarations: Declaration) -> list[Path]:
    return write_declarations(plan_declarations(root, declarations))


# --- the manifest edit (in process, no hub) ---------------------------------------------------


def test_edit_adds_one_line_and_keeps_everything_else(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    declare(tmp_path, Declaration("gpt2"), Declaration("org/big", needs="weights"))
    expected = PYPROJECT.replace(
        "   # aligned comment\n",
        "   # aligned comment\n"
        '"gpt2" = { revision = "main", needs = "config" }\n'
        '"org/big" = { revision = "main", needs = "weights" }\n',
    )
    assert (tmp_path / "pyproject.toml").read_text() == expected
    assert load_manifest(tmp_path).model("org/big").needs == "weights"  # type: ignore[union-attr]


def test_edit_creates_the_table_and_keeps_crlf(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_bytes(
        b'[project]\r\nname = "x"  # a comment\r\n\r\n[tool.ruff]\r\nline-length = 9\r\n'
    )
    path.chmod(0o640)
    declare(tmp_path, Declaration("gpt2"))
    assert path.read_bytes() == (
        b'[project]\r\nname = "x"  # a comment\r\n\r\n[tool.ruff]\r\nline-length = 9\r\n\r\n'
        b'[tool.mlcheck.models]\r\n"gpt2" = { revision = "main", needs = "config" }\r\n'
    )
    assert path.stat().st_mode & 0o777 == 0o640


def test_edit_changes_only_the_values_asked_for(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    # same as declared: nothing to write, the file is not touched
    same = plan_declarations(tmp_path, [Declaration("org/encoder", needs="config")])
    assert not same[0].changed and write_declarations(same) == []
    assert "already declared (revision v1, needs config)" in same[0].describe()
    declare(tmp_path, Declaration("org/encoder", needs="weights"))
    assert (tmp_path / "pyproject.toml").read_text() == PYPROJECT.replace(
        'needs = "config" }   # aligned', 'needs = "weights" }   # aligned'
    )
    # --from-tests never downgrades what a model needs, nor moves its revision
    upgrade = plan_declarations(tmp_path, [Declaration("org/encoder", "main", "config", True)])
    assert not upgrade[0].changed


def test_edit_goes_to_mlcheck_toml_when_that_is_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (tmp_path / "mlcheck.toml").write_text('# models\n[models]\n"org/a" = "main"\n')
    declare(tmp_path, Declaration("org/b"), Declaration("org/a", needs="weights"))
    assert (tmp_path / "pyproject.toml").read_text() == '[project]\nname = "x"\n'
    assert (tmp_path / "mlcheck.toml").read_text() == (
        '# models\n[models]\n"org/a" = { revision = "main", needs = "weights" }\n'
        '"org/b" = { revision = "main", needs = "config" }\n'
    )


def test_add_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["add", "gpt2", "--root", str(empty)]) == 2
    assert "no pyproject.toml (or mlcheck.toml)" in capsys.readouterr().err
    (empty / "pyproject.toml").write_text(PYPROJECT)
    assert main(["add", "./my-folder", "--root", str(empty)]) == 2
    assert "'./my-folder' is not a model id" in capsys.readouterr().err
    assert main(["add", "gpt2", "--task", "causal", "--root", str(empty)]) == 2
    assert "unknown --task 'causal'" in capsys.readouterr().err
    assert main(["add", "--from-tests", "--needs", "weights", "--root", str(empty)]) == 2
    assert "--from-tests infers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["add", "gpt2", "--needs", "weight", "--root", str(empty)])
    assert exit_.value.code == 2
    assert "invalid choice: 'weight'" in capsys.readouterr().err
    assert (empty / "pyproject.toml").read_text() == PYPROJECT  # nothing written on the way


# --- reading the tests' source -----------------------------------------------------------------

TESTS_SOURCE = """\
import pytest
from transformers import BertConfig

MODEL = "org/const"
pytestmark = pytest.mark.real_model("org/module-marked")

@pytest.mark.real_model("org/marked", models=["org/kw"])
def test_real(models):
    models.real("org/marked")
    models.random(MODEL, task="causal-lm")

def test_fast(models, name):
    models.config("org/literal")
    models.tokenizer(model_id="org/literal")
    models.random("org/marked")               # weights already: stays weights
    models.random(BertConfig(hidden_size=8))  # a config, not an id
    models.random("/abs/local/folder")        # a local folder: nothing to declare
    models.empty(name)
    models.config(f"org/{name}")
    other.random("org/not-the-fixture")

@pytest.mark.parametrize("model_id", ["org/p1", pytest.param("org/p2", marks=pytest.mark.slow)])
def test_each(models, model_id):
    models.config(model_id)

class TestPairs:
    @pytest.mark.parametrize("model_id, n", [("org/p3", 1), ("org/p4", 2)])
    def test_pairs(self, models, model_id, n):
        self.models.real(model_id)

@pytest.mark.parametrize("model_id", [make_id()])
def test_dynamic(models, model_id):
    models.config(model_id)
"""


def test_scan_finds_literal_ids_and_lists_the_rest(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_things.py").write_text(TESTS_SOURCE)
    (tests / "helpers.py").write_text('models.real("org/not-a-test-file")\n')
    (tests / "test_broken.py").write_text("def broken(:\n")
    usage = scan([tests])
    assert usage.models == {
        "org/const": "config",
        "org/module-marked": "weights",
        "org/marked": "weights",
        "org/kw": "weights",
        "org/literal": "config",
        "org/p1": "config",
        "org/p2": "config",
        "org/p3": "weights",
        "org/p4": "weights",
    }
    unresolved = sorted((u.path.name, u.line, u.why) for u in usage.unresolved)
    assert unresolved == [
        ("test_broken.py", 1, "not valid Python (invalid syntax)"),
        ("test_things.py", 18, "`name`"),
        ("test_things.py", 19, "an f-string"),
        ("test_things.py", 33, "`model_id`"),
    ]
    assert usage.files == 2


def test_scan_knows_every_model_method_of_the_fixture() -> None:
    """A new ModelFactory method that takes a model id must be taught to the scan."""
    public = {
        name
        for name, member in inspect.getmembers(ModelFactory, inspect.isfunction)
        if not name.startswith("_")
        and next(iter(list(inspect.signature(member).parameters)[1:]), "").startswith("model_id")
    }
    assert public == set(FACTORY_NEEDS)


# --- against olah ------------------------------------------------------------------------------

REAL_TEST = """\
import pytest

MODEL = "{model}"

@pytest.mark.real_model(MODEL)
def test_real_weights_offline(models):
    model = models.real(MODEL)
    tokenizer = models.tokenizer(MODEL)
    out = model(**tokenizer(["hello world"], return_tensors="pt"))
    assert out.last_hidden_state.shape == (1, 4, 16)
"""


@pytest.mark.slow
def test_add_declares_locks_fetches_then_an_offline_real_run_passes(
    hub: Hub, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    model = hub.model_id("tiny-bert")
    commit = hub.push_folder(model, tiny_bert_dir)
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "tests" / "test_real.py").write_text(REAL_TEST.format(model=model))
    env = hub_env(hub, tmp_path / "cache")

    first = mlcheck("add", model, "--needs", "weights", cwd=root, env=env)
    assert first.returncode == 0, first.stderr
    assert f"declared {model} (revision main, needs weights) in pyproject.toml" in first.stdout
    assert f"locked {model}@main -> {commit[:12]}" in first.stdout
    assert "downloaded 6 files" in first.stdout, first.stdout
    assert (root / "pyproject.toml").read_text() == PYPROJECT.replace(
        "   # aligned comment\n",
        f'   # aligned comment\n"{model}" = {{ revision = "main", needs = "weights" }}\n',
    )
    lock = read_lock(root)
    assert lock is not None and lock.models[model].commit == commit

    # the same add again: no byte changes, no request to the hub
    files = {name: (root / name).read_bytes() for name in ("pyproject.toml", "mlcheck.lock")}
    before = hub.requests()
    again = mlcheck("add", model, "--needs", "weights", "--task", "fill-mask", cwd=root, env=env)
    assert again.returncode == 0, again.stderr
    assert "already declared (revision main, needs weights)" in again.stdout
    assert f"{model}: task fill-mask builds BertForMaskedLM" in again.stdout
    assert "nothing to change" in again.stdout and "nothing downloaded" in again.stdout
    assert {name: (root / name).read_bytes() for name in files} == files
    assert hub.requests() == before

    # the real tier, with no hub at all
    dead = hub_env(f"http://127.0.0.1:{free_port()}", tmp_path / "cache")
    run = mlcheck("run", "--tier", "real", "--no-warm", cwd=root, env=dead)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert hub.requests() == before


def test_add_of_a_model_the_hub_lacks_writes_nothing(hub: Hub, tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    ghost = hub.model_id("ghost")
    result = mlcheck("add", ghost, cwd=root, env=hub_env(hub, tmp_path / "cache"))
    assert result.returncode == 2
    assert f"'{ghost}'@main: repository not found" in result.stderr
    assert "nothing was declared" in result.stderr and "Traceback" not in result.stderr
    offline = {**hub_env(hub, tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    result = mlcheck("add", ghost, cwd=root, env=offline)
    assert result.returncode == 2 and "run it without HF_HUB_OFFLINE" in result.stderr
    assert (root / "pyproject.toml").read_text() == PYPROJECT
    assert not (root / "mlcheck.lock").exists()


def test_add_from_tests_adds_the_missing_ids_and_lists_the_unresolved(
    hub: Hub, tmp_path: Path
) -> None:
    config = b'{"model_type": "bert", "hidden_size": 16}'
    weights = b"\0" * 64  # only hashed and fetched here, never loaded
    fast, real = hub.model_id("fast"), hub.model_id("real")
    hub.push(fast, {"config.json": config})
    hub.push(real, {"config.json": config, "model.safetensors": weights})
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    # one of them declared by hand, not locked yet
    hand = f'"{fast}" = {{ revision = "main", needs = "config" }}\n'
    (root / "pyproject.toml").write_text(PYPROJECT.replace("[tool.ruff]", hand + "\n[tool.ruff]"))
    (root / "tests" / "test_models.py").write_text(
        "import pytest\n"
        f'FAST = "{fast}"\n'
        "def test_fast(models, name):\n"
        "    models.random(FAST)\n"
        '    models.config(f"org/{name}")\n'
        f'@pytest.mark.real_model("{real}")\n'
        "def test_real(models):\n"
        "    pass\n"
    )
    env = hub_env(hub, tmp_path / "cache")
    result = mlcheck("add", "--from-tests", cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    assert "read 1 test file: 2 model ids" in result.stdout
    assert f"{fast} is already declared (revision main, needs config)" in result.stdout
    assert f"declared {real} (revision main, needs weights)" in result.stdout
    assert "tests/test_models.py:5: models.config(f'org/{name}')  (an f-string)" in result.stdout
    manifest = load_manifest(root)
    assert {m: s.needs for m, s in manifest.models.items() if m != "org/encoder"} == {
        fast: "config",
        real: "weights",
    }
    lock = read_lock(root)
    assert lock is not None and {fast, real} <= set(lock.models)
    assert [f.path for f in lock.models[real].files] == ["config.json", "model.safetensors"]


# --- --from-tests reads direct library loads (in process, no hub) -----------------------------


def test_scan_finds_from_pretrained_and_pipeline_literals_and_lists_the_rest(
    tmp_path: Path,
) -> None:
    from mlcheck.project.model_usage import scan_source

    source = (
        "from transformers import AutoConfig, AutoModel, AutoTokenizer, BertModel, pipeline\n"
        'TINY = "hf-internal-testing/tiny-random-bert"\n'
        "def test_hf(tmp_path, name):\n"
        '    AutoConfig.from_pretrained("org/config-only")\n'
        '    AutoTokenizer.from_pretrained(pretrained_model_name_or_path="org/tok")\n'
        "    BertModel.from_pretrained(TINY)\n"
        '    transformers.AutoModelForCausalLM.from_pretrained("org/lm", revision="main")\n'
        '    pipeline("text-classification", model="org/clf", tokenizer="org/tok2")\n'
        '    pipeline("fill-mask", "org/positional")\n'
        "    AutoModel.from_pretrained(tmp_path)\n"
        '    pipeline(model=f"org/{name}")\n'
        '    AutoConfig.from_pretrained("org/lm")\n'  # config of a weights model stays weights
    )
    usage = scan_source(source, Path("tests/test_hf.py"))
    assert usage.models == {
        "org/config-only": "config",
        "org/tok": "config",
        "hf-internal-testing/tiny-random-bert": "weights",
        "org/lm": "weights",
        "org/clf": "weights",
        "org/tok2": "config",
        "org/positional": "weights",
    }
    assert [(u.where, u.why) for u in usage.unresolved] == [
        ("tests/test_hf.py:10", "`tmp_path`"),
        ("tests/test_hf.py:11", "an f-string"),
    ]
