"""The manifest: [tool.mlcheck] in pyproject.toml and mlcheck.toml, and its error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcheck.errors import ManifestError
from mlcheck.project.manifest import CONFIG_PATTERNS, ModelSpec, find_root, load_manifest


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_pyproject_models_and_markers(tmp_path: Path) -> None:
    write(
        tmp_path,
        "pyproject.toml",
        """
[project]
name = "x"

[tool.mlcheck]
markers = { slow = "real", cuda = "gpu" }

[tool.mlcheck.models]
"sentence-transformers/all-MiniLM-L6-v2" = { revision = "main", needs = "weights" }
"meta-llama/Llama-3.1-8B" = { revision = "v1.0", needs = "config", trust_remote_code = true }
"org/pickled" = { needs = "weights", allow_pickle = true, allow_patterns = ["*.bin", "*.json"] }
""",
    )
    manifest = load_manifest(tmp_path)
    assert manifest.markers == {"slow": "real", "cuda": "gpu"}
    assert manifest.tier_of_marker("slow") == "real"
    minilm = manifest.model("sentence-transformers/all-MiniLM-L6-v2")
    assert minilm == ModelSpec("sentence-transformers/all-MiniLM-L6-v2", "main", "weights")
    assert minilm.patterns() == (*CONFIG_PATTERNS, "*.safetensors")
    llama = manifest.model("meta-llama/Llama-3.1-8B")
    assert llama is not None and llama.revision == "v1.0" and llama.trust_remote_code
    assert llama.patterns() == (*CONFIG_PATTERNS, "*.py")  # remote code, no weights
    pickled = manifest.model("org/pickled")
    assert pickled is not None and pickled.allow_pickle
    assert pickled.patterns() == ("*.bin", "*.json")  # allow_patterns replaces the defaults
    assert manifest.source == tmp_path / "pyproject.toml"


def test_mlcheck_toml_top_level_keys_and_defaults(tmp_path: Path) -> None:
    write(tmp_path, "mlcheck.toml", 'other = 1\n[models]\n"org/a" = {}\n"gpt2" = "abc"\n')
    manifest = load_manifest(tmp_path)
    assert manifest.model("org/a") == ModelSpec("org/a", revision="main", needs="config")
    assert manifest.model("gpt2") == ModelSpec("gpt2", revision="abc")  # shorthand: revision
    assert manifest.extra == {"other": 1}  # unknown top-level keys are kept for others


def test_no_manifest_is_empty(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[project]\nname = "x"\n')
    manifest = load_manifest(tmp_path)
    assert manifest.models == {} and manifest.markers == {} and manifest.source is None


def test_model_in_both_files_names_both(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[tool.mlcheck.models]\n"org/a" = { needs = "config" }\n')
    write(tmp_path, "mlcheck.toml", '[models]\n"org/a" = { needs = "weights" }\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    message = str(info.value)
    assert "'org/a'" in message and "pyproject.toml" in message and "mlcheck.toml" in message


def test_split_between_files_is_fine(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[tool.mlcheck]\nmarkers = { slow = "real" }\n')
    write(tmp_path, "mlcheck.toml", '[models]\n"org/a" = { needs = "weights" }\n')
    manifest = load_manifest(tmp_path)
    assert manifest.markers == {"slow": "real"} and set(manifest.models) == {"org/a"}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('{ needs = "weight" }', ["`needs`", "'weight'", '"weights"', "org/a"]),
        ('{ revison = "main" }', ["unknown key `revison`", "did you mean `revision`", "org/a"]),
        ("{ revision = 3 }", ["`revision`", 'revision = "main"']),
        ('{ allow_pickle = "yes" }', ["`allow_pickle`", "true or false"]),
        ('{ allow_patterns = "*.json" }', ["`allow_patterns`", "list of glob"]),
        ("3", ["must be a table"]),
    ],
)
def test_model_errors_name_key_model_and_fix(
    tmp_path: Path, entry: str, expected: list[str]
) -> None:
    write(tmp_path, "pyproject.toml", f'[tool.mlcheck.models]\n"org/a" = {entry}\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    for text in expected:
        assert text in str(info.value)
    assert "tool.mlcheck.models" in str(info.value)


def test_bad_marker_tier_and_model_id(tmp_path: Path) -> None:
    write(tmp_path, "mlcheck.toml", 'markers = { slow = "slow" }\n')
    with pytest.raises(ManifestError, match=r"`markers.slow` = 'slow' is not a tier; use one of"):
        load_manifest(tmp_path)
    write(tmp_path, "mlcheck.toml", '[models]\n"a/b/c" = {}\n')
    with pytest.raises(ManifestError, match='write it as "org/name"'):
        load_manifest(tmp_path)


def test_invalid_toml_says_which_file(tmp_path: Path) -> None:
    write(tmp_path, "mlcheck.toml", "models = [\n")
    with pytest.raises(ManifestError, match=r"mlcheck\.toml is not valid TOML"):
        load_manifest(tmp_path)


def test_find_root_walks_up(tmp_path: Path) -> None:
    write(tmp_path, "mlcheck.toml", "")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_root(deep) == tmp_path.resolve()
