"""`mlcheck mutate` end to end on generated suites with real tiny models (GPT-2 and BERT built from
configs in a local cache; no mocks): every mutant is killed by its natural check, survives a
suite without it (with the right suggestion), or is not reached by a suite that never runs it.

Each suite is mutated once (module-scoped fixtures) and several tests read its report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cmarkgfm
import jsonschema
import pytest
import transformers
from runcli import mlcheck

from mlcheck.power.mutants import MUTANTS
from mlcheck.project.cache import add

PYPROJECT = """\
[tool.mlcheck.models]
"gpt2" = { revision = "main", needs = "config" }
"bert" = { revision = "main", needs = "config" }
"""

COMMON = """\
import torch
IDS = torch.arange(16).reshape(2, 8) % 60 + 1
PADDED = torch.ones_like(IDS)
PADDED[1, 5:] = 0
BATCH = {"input_ids": IDS, "labels": IDS}


def lm(models):
    return models.random("gpt2", task="causal-lm")


def classifier(models):
    config = models.config("bert", id2label={0: "neg", 1: "pos"})
    return models.random(config, task="sequence-classification")
"""

# The natural test for each mutant (the one expected to kill it).
STRONG = (
    COMMON
    + """
from mlcheck.checks import (
    assert_batch_invariant, assert_cache_consistent, assert_causal, assert_initial_loss,
    assert_labels, assert_loss_decreases, assert_loss_matches, assert_params_update,
    assert_save_load_roundtrip, assert_train_mode,
)


def test_causal(models):
    assert_causal(lm(models), {"input_ids": IDS})


def test_cache(models):
    assert_cache_consistent(lm(models), {"input_ids": IDS})


def test_loss_matches(models):
    assert_loss_matches(lm(models), BATCH, reference="causal-lm")


def test_initial_loss(models):
    assert_initial_loss(lm(models), BATCH)


def test_params_update(models):
    assert_params_update(lm(models), BATCH)


def test_loss_decreases(models):
    assert_loss_decreases(lm(models), BATCH)


def test_train_mode(models):
    assert_train_mode(lm(models), {"input_ids": IDS})


def test_padding(models):
    # the encoder's hidden states: a random head's logits are too small to show the leak
    assert_batch_invariant(models.random("bert"), {"input_ids": IDS, "attention_mask": PADDED})


def test_labels(models):
    assert_labels(classifier(models), {0: "neg", 1: "pos"})


def test_save_load(models, tmp_path):
    assert_save_load_roundtrip(lm(models), {"input_ids": IDS}, tmp_path)
"""
)

KILLERS = {
    "dropout-off-in-train": "test_train_mode",
    "eval-stuck": "test_train_mode",
    "attention-mask-ignored": "test_padding",
    "causal-mask-dropped": "test_causal",
    "labels-unshifted": "test_loss_matches",
    "loss-detached": "test_params_update",
    "optimizer-noop": "test_params_update",
    "reduction-sum": "test_initial_loss",
    "softmax-wrong-dim": "test_causal",
    "weights-not-loaded": "test_save_load",
    "labels-permuted": "test_labels",
    "kv-cache-stale": "test_cache",
}

# Runs every patched code path (training with dropout, padding, generation, loading, named
# labels) and asserts only shapes: every mutant is reached, none is caught.
WEAK = (
    COMMON
    + """
def test_runs_everything_checks_shapes(models, tmp_path):
    model = lm(models).train()
    out = model(input_ids=IDS, attention_mask=PADDED, labels=IDS)
    assert out.logits.shape == (2, 8, model.config.vocab_size)
    out.loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    generated = model.eval().generate(IDS[:1], max_new_tokens=2, do_sample=False)
    assert generated.shape == (1, 10)
    model.save_pretrained(tmp_path)
    type(model).from_pretrained(tmp_path)


def test_classifier_shapes(models):
    clf = classifier(models)
    out = clf(input_ids=IDS, attention_mask=PADDED)
    assert out.logits.shape == (2, 2)
    assert len(clf.config.id2label) == 2
"""
)

SUGGESTED = {
    "dropout-off-in-train": ("assert_train_mode(model, inputs)", "gpt2"),
    "eval-stuck": ("assert_train_mode(model, inputs)", "gpt2"),
    # the causal LM's right padding reaches it too, but the encoder is named first
    "attention-mask-ignored": ("assert_batch_invariant(model, inputs)", "bert"),
    "causal-mask-dropped": ("assert_causal(model, inputs)", "gpt2"),
    "labels-unshifted": ('assert_loss_matches(model, batch, reference="causal-lm")', "gpt2"),
    "loss-detached": ("assert_loss_decreases(model, batch)", "gpt2"),
    "optimizer-noop": ("assert_params_update(model, batch)", "gpt2"),
    "reduction-sum": ("assert_initial_loss(model, batch)", "gpt2"),
    "softmax-wrong-dim": ("assert_batch_invariant(model, inputs)", "bert"),
    "weights-not-loaded": ("assert_predicts(model, tokenizer", "gpt2"),
    "labels-permuted": ("assert_labels(model,", "bert"),
    "kv-cache-stale": ("assert_cache_consistent(model, inputs)", "gpt2"),
}

UNREACHED = """\
import torch


def test_mlp_without_dropout():
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    assert mlp(torch.zeros(3, 4)).shape == (3, 2)
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A Hugging Face cache with tiny GPT-2 and BERT configs, as `mlcheck cache add` makes it."""
    base = tmp_path_factory.mktemp("hub")
    configs = {
        "gpt2": transformers.GPT2Config(
            n_layer=1, n_embd=16, n_head=2, vocab_size=64, bos_token_id=0, eos_token_id=0
        ),
        "bert": transformers.BertConfig(
            num_hidden_layers=1,
            hidden_size=16,
            num_attention_heads=2,
            intermediate_size=32,
            vocab_size=64,
        ),
    }
    for name, config in configs.items():
        config.save_pretrained(base / name)
    return {"HF_HUB_CACHE": str(base / "cache"), "configs": str(base)}


def make_project(root: Path, hub: dict[str, str], tests: str) -> Path:
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    for name in ("gpt2", "bert"):
        add(
            Path(hub["configs"]) / name,
            name,
            "main",
            cache_dir=Path(hub["HF_HUB_CACHE"]),
            root=root,
        )
    (root / "tests" / "test_model.py").write_text(tests)
    return root


def env_for(hub: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "HF_HUB_CACHE": hub["HF_HUB_CACHE"], "OMP_NUM_THREADS": "1"}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def mutate(root: Path, out: Path, hub: dict[str, str], *args: str) -> tuple[Any, dict[str, Any]]:
    proc = mlcheck(
        "mutate", "tests", "--results-dir", str(out), *args, cwd=root, env=env_for(hub), timeout=900
    )
    report = (
        json.loads((out / "mutation.json").read_text()) if (out / "mutation.json").exists() else {}
    )
    return proc, report


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in report["mutants"]}


# One test per mutated suite: a module-scoped fixture would be built once per xdist worker.


def test_strong_suite_kills_every_mutant_with_its_natural_check(
    tmp_path: Path, hub: dict[str, str]
) -> None:
    root = make_project(tmp_path / "project", hub, STRONG)
    before = snapshot(root)
    proc, report = mutate(root, tmp_path / "out", hub, "-n", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mutants = by_name(report)
    assert set(mutants) == set(MUTANTS)
    for name, test in KILLERS.items():
        assert mutants[name]["status"] == "killed", (name, mutants[name])
        assert mutants[name]["kill"] == "failed"
        # stops at the first kill: one killer, the natural one
        assert mutants[name]["killers"] == [f"tests/test_model.py::{test}"], name
        assert mutants[name]["suggestion"] is None
    assert (report["score"], report["killed"], report["reached"]) == (1.0, 12, 12)
    assert report["unmutated"]["tests"] == 10
    validate(report)

    # nothing was written into the project: no .pytest_cache, __pycache__ or results
    assert snapshot(root) == before

    # the same results with one mutant run at a time
    names = ["reduction-sum", "kv-cache-stale"]
    _, again = mutate(root, tmp_path / "one", hub, "-n", "1", "--mutants", ",".join(names))
    keys = ("status", "kill", "killers", "reached_by", "suggestion")
    one = {m["name"]: {k: m[k] for k in keys} for m in again["mutants"]}
    assert one == {n: {k: mutants[n][k] for k in keys} for n in names}


def test_weak_suite_lets_every_mutant_survive_and_says_what_would_catch_it(
    tmp_path: Path, hub: dict[str, str]
) -> None:
    root = make_project(tmp_path / "project", hub, WEAK)
    out = tmp_path / "out"
    proc, report = mutate(root, out, hub, "-n", "2", "--fail-under", "0.5")
    # --fail-under: the only way mutate exits 1; the report is written all the same
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "below --fail-under" in proc.stderr
    mutants = by_name(report)
    for name, (call, model) in SUGGESTED.items():
        m = mutants[name]
        assert m["status"] == "survived", (name, m)
        assert m["reached_by"], name  # the patch changed behaviour in a test
        text = m["suggestion"]
        assert text.startswith(f"`{name}` survived: {MUTANTS[name].missing}; add `"), text
        # the first test that reached it names its model (the classifier test sorts first)
        first = "test_classifier_shapes" if any("classifier" in n for n in m["reached_by"]) else ""
        assert (model == "bert") == bool(first), (name, m["reached_by"])
        assert call in text and f"builds `{model}`" in text, text
    assert (report["score"], report["killed"], report["reached"]) == (0.0, 0, 12)
    validate(report)

    html = cmarkgfm.github_flavored_markdown_to_html((out / "mutation.md").read_text())
    assert "<h3>mlcheck mutate: 0 of 12 reached mutants killed (0%)</h3>" in html
    assert "<table>" in html and html.count("<strong>survived</strong>") == 12
    assert (
        "<code>causal-mask-dropped</code> survived: no test checks causality; add "
        "<code>assert_causal(model, inputs)</code> to a test that builds <code>gpt2</code>"
    ) in html
    # the terminal says it too
    assert "causal-mask-dropped survived: no test checks causality" in proc.stdout


def validate(report: dict[str, Any]) -> None:
    from importlib import resources

    schema = json.loads(
        resources.files("mlcheck").joinpath("schema/mutation.schema.json").read_text()
    )
    jsonschema.validate(report, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**report, "score": "high"}, schema)


def test_mutants_a_suite_never_runs_are_not_reached_and_not_counted(
    tmp_path: Path, hub: dict[str, str]
) -> None:
    root = make_project(tmp_path / "project", hub, UNREACHED)
    names = "causal-mask-dropped,optimizer-noop"
    proc, report = mutate(root, tmp_path / "out", hub, "--mutants", names)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [m["status"] for m in report["mutants"]] == ["not reached"] * 2
    assert report["score"] is None and report["reached"] == 0
    assert by_name(report)["optimizer-noop"]["suggestion"] == (
        "`optimizer-noop` not reached: no test took an optimizer step"
    )
    md = (tmp_path / "out" / "mutation.md").read_text()
    assert "no mutant was reached" in md


def test_a_failing_unmutated_run_stops_with_exit_2(tmp_path: Path, hub: dict[str, str]) -> None:
    root = make_project(
        tmp_path / "project", hub, UNREACHED + "\n\ndef test_broken():\n    assert 1 == 2\n"
    )
    proc, report = mutate(root, tmp_path / "out", hub)
    assert proc.returncode == 2
    assert "fail without any mutant" in proc.stderr
    assert "tests/test_model.py::test_broken" in proc.stderr
    assert report == {}  # no mutant ran, no report


def test_budget_stops_cleanly_and_reports_what_did_not_run(
    tmp_path: Path, hub: dict[str, str]
) -> None:
    root = make_project(tmp_path / "project", hub, UNREACHED)
    proc, report = mutate(
        root, tmp_path / "out", hub, "--budget", "0.0001", "--mutants", "eval-stuck,loss-detached"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [(m["status"], m["message"]) for m in report["mutants"]] == [
        ("not run", "the --budget ran out")
    ] * 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mutants", "nope"], "--mutants: unknown nope"),
        (["--fail-under", "200"], "--fail-under takes a score"),
        (["--budget", "0"], "--budget takes a positive number"),
        (["missing_dir"], "does not exist"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = mlcheck("mutate", *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
