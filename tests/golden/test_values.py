"""Golden values: stored forms, each mode just inside and just outside its tolerance, files."""

import json
import math
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import torch

from mlcheck.errors import GoldenFileError, UsageError
from mlcheck.golden import store
from mlcheck.golden.values import Tolerance, compare, encode, shortest


def differs(expected, actual, **tol):
    return compare(
        encode(expected, k=tol.get("k")), encode(actual, k=tol.get("k")), Tolerance(**tol)
    )


def schema_errors(data):
    schema = json.loads(
        resources.files("mlcheck").joinpath("schema/golden.schema.json").read_text()
    )
    return list(jsonschema.Draft202012Validator(schema).iter_errors(data))


# -- stored forms -------------------------------------------------------------------------------


def test_values_are_rounded_to_what_the_dtype_holds_and_round_trip_exactly():
    x = torch.tensor([0.1, 1 / 3, -2.5e-8, 65504.0])
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        t = x.to(dtype)
        stored = encode(t)["tensor"]
        assert stored["dtype"] == str(dtype).removeprefix("torch.")
        back = torch.tensor([float(v) for v in stored["values"]], dtype=torch.float64).to(dtype)
        assert torch.equal(back, t)  # exact mode can compare stored values bitwise
    assert encode(x.bfloat16())["tensor"]["values"][:2] == [
        0.1,
        0.334,
    ]  # shortest decimals that round back exactly
    assert encode(x)["tensor"]["values"][0] == 0.1  # not 0.10000000149011612
    assert shortest(math.inf, "float32") == "inf"


def test_nested_structures_and_non_float_values():
    value = {"logits": torch.arange(6).reshape(2, 3), "probs": [0.25, True], "label": "unsafe"}
    stored = encode(value)
    assert stored["dict"]["logits"] == {
        "tensor": {"dtype": "int64", "shape": [2, 3], "values": [0, 1, 2, 3, 4, 5]}
    }
    assert stored["dict"]["probs"] == {"list": [{"float": 0.25}, {"bool": True}]}
    assert not schema_errors(
        {"format": 1, "tests": {"t": {"v": {"cpu": {"recorded_with": {}, "value": stored}}}}}
    )
    changed = {**value, "label": "safe", "probs": [0.25, True]}
    (diff,) = differs(value, changed)
    assert diff.path == "label" and "'unsafe'" in diff.problem
    (diff,) = differs(value, {**value, "logits": torch.arange(6).reshape(3, 2)})
    assert diff.path == "logits" and "shape (3, 2)" in diff.problem
    big = torch.tensor([2**53, 1])
    assert differs(big, big + torch.tensor([1, 0]))  # int64 beyond float64's integers
    with pytest.raises(UsageError, match="cannot store a set"):
        encode({1, 2})


# -- modes: just inside, just outside -----------------------------------------------------------


def test_exact_is_bitwise():
    x = torch.tensor([1.0, 2.0])
    assert not differs(x, x.clone(), mode="exact")
    (diff,) = differs(x, torch.nextafter(x, torch.tensor(3.0)), mode="exact")
    assert "2 of 2 elements not bitwise equal" in diff.problem


@pytest.mark.parametrize(
    ("dtype", "inside", "outside"),
    [
        # float32: atol 1e-5 + rtol 1.3e-6 at 1.0
        (torch.float32, 1.000011, 1.000012),
        # float16: 1e-5 + 1e-3; one ulp above 1 is 9.8e-4, two are 2.0e-3
        (torch.float16, 1.0009765625, 1.001953125),
        # bfloat16: 1e-5 + 1.6e-2; two ulps (1.56e-2) inside, three outside
        (torch.bfloat16, 1.015625, 1.0234375),
    ],
)
def test_allclose_defaults_by_dtype(dtype, inside, outside):
    golden = torch.tensor([1.0, 0.5], dtype=dtype)
    assert not differs(golden, torch.tensor([inside, 0.5], dtype=dtype))
    (diff,) = differs(golden, torch.tensor([outside, 0.5], dtype=dtype))
    assert diff.problem.startswith("1 of 2 outside")
    assert diff.first == (f"(0): 1 → {float(torch.tensor(outside, dtype=dtype)):.4g}",)
    assert diff.max_abs == pytest.approx(float(torch.tensor(outside, dtype=dtype)) - 1)


def test_allclose_explicit_tolerances_and_floats():
    assert not differs(1.0, 1.09, rtol=0.0, atol=0.1)
    (diff,) = differs(1.0, 1.11, rtol=0.0, atol=0.1)
    assert "atol=0.1" in diff.problem
    assert differs(0.1, 0.1 + 1e-6)  # Python floats: float64 defaults


def test_cosine():
    golden = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert not differs(
        golden, torch.tensor([1.0, 0.14], dtype=torch.float64), mode="cosine", min_cosine=0.99
    )
    (diff,) = differs(
        golden, torch.tensor([1.0, 0.15], dtype=torch.float64), mode="cosine", min_cosine=0.99
    )
    assert "cosine similarity 0.98893" in diff.problem and diff.cosine == pytest.approx(
        0.988936, abs=1e-6
    )


def test_topk_compares_the_winning_indices_as_sets():
    golden = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    swapped = torch.tensor([[2.0, 3.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    assert not differs(golden, swapped, mode="topk", k=2)
    (diff,) = differs(
        golden, torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 1.0, 2.0, 3.0]]), mode="topk", k=2
    )
    assert diff.problem == "top-2 indices differ in 1 of 2 rows" and diff.first == (
        "row 0: [0, 1] → [0, 2]",
    )
    (diff,) = differs(golden, swapped, mode="topk")  # k=1: argmax
    with pytest.raises(UsageError, match="k smaller than the last dimension"):
        differs(golden, golden, mode="topk", k=4)


def test_large_tensors_are_compared_by_summary_and_say_so():
    torch.manual_seed(0)
    x = torch.randn(100, 200)  # 20,000 elements
    stored = encode(x)["tensor"]
    assert "values" not in stored and len(stored["head"]) == 64 and stored["stride"] == 20
    assert not differs(x, x.clone())
    y = x.clone()
    y[0, 40] += 0.01  # index 40 is in the strided sample (every 20th)
    (diff,) = differs(x, y)
    assert "[40]: " in diff.first[0] and "compared by summary: 20,000 elements" in diff.sampled
    z = x.clone()
    z[50, 1] += 5.0  # not in any kept slice: the sum and norm catch it
    (diff,) = differs(x, z)
    assert "sum" in " ".join(diff.first) and diff.sampled
    assert differs(x, x * 1.01, mode="cosine", min_cosine=0.99999) == []  # direction kept
    (diff,) = differs(x, z, mode="topk", k=3)
    assert "not recorded with this k" not in diff.problem  # recorded with k, compared by rows


# -- files ------------------------------------------------------------------------------------


def test_files_are_sorted_diff_friendly_and_valid(tmp_path):
    path = tmp_path / "__golden__" / "test_m.json"
    record = {"recorded_with": {"torch": "2.13.0"}, "value": encode(torch.linspace(0, 1, 40))}
    store.put(path, "test_b", "z", "cpu", record)
    store.put(path, "test_a", "y", "cuda:sm90", record)
    text = path.read_text()
    assert text.index('"test_a"') < text.index('"test_b"')
    assert max(len(line) for line in text.splitlines()) <= store.WIDTH
    assert not schema_errors(json.loads(text))
    assert store.read(path)["tests"]["test_b"]["z"]["cpu"] == record


BROKEN = [
    ("{", "line 1: not valid JSON"),
    ('{"format": 1, "tests": {}}\n<<<<<<< HEAD\n', "merge-conflict markers"),
    ('{"format": 1}', 'expected an object with "format" and "tests"'),
    (
        '{"format": 1, "tests": {"test_a": {"x": {"gpu 0": '
        '{"recorded_with": {}, "value": {"int": 1}}}}}}',
        "test_a › x [gpu 0]: 'gpu 0' is not a hardware key",
    ),
    (
        '{"format": 1, "tests": {"test_a": {"x": {"cpu": {"recorded_with": {}, "value": '
        '{"tensor": {"dtype": "float32", "shape": [2, 2], "values": [1, 2, 3]}}}}}}}',
        "test_a › x [cpu]: tensor has 3 values, its shape [2, 2] says 4",
    ),  # beyond JSON Schema
    (
        '{"format": 1, "tests": {"test_a": {"x": {"cpu": {"recorded_with": {}, "value": '
        '{"dict": {"a": {"float": "1.5"}}}}}}}}',
        "test_a › x [cpu].a: float value '1.5' has the wrong type",
    ),
]


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_a_broken_golden_file_names_the_file_and_entry(tmp_path, text, message):
    path = tmp_path / "test_m.json"
    path.write_text(text)
    with pytest.raises(GoldenFileError) as info:
        store.read(path)
    assert str(path) in str(info.value) and message in str(info.value)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return
    if "says 4" not in message:  # JSON Schema cannot count elements against a shape
        assert schema_errors(data)  # the published schema refuses it too


def test_lookup_never_uses_another_devices_key():
    assert store.lookup({"cuda:sm80": 1}, "cuda:sm90") is None
    assert store.lookup({"cuda:sm80": 1, "cuda": 2}, "cuda:sm90") == ("cuda", 2)
    assert store.lookup({"rocm:gfx942": 1, "default": 3}, "cuda:sm90") == ("default", 3)
    assert store.lookup({"cuda:sm90": 1, "default": 3}, "cpu") == ("default", 3)
    assert store.lookup({"cuda:sm90": 1}, "cpu") is None
    assert isinstance(Path, type)
