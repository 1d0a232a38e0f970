"""The checks package as a whole: what a failing check shows and what it re-exports.

Real tiny models and in-process pytest runs; 1 torch thread (conftest).
"""

from __future__ import annotations

import pytest

import mlcheck


def test_new_checks_are_importable_from_mlcheck() -> None:
    for name in ("assert_causal", "assert_loss_matches", "assert_train_mode",
                 "assert_initial_loss", "assert_equivalent", "assert_dtype_agrees",
                 "assert_cache_consistent", "LossFn", "ReferenceLoss"):  # fmt: skip
        assert getattr(mlcheck, name) is getattr(mlcheck.checks, name)


def test_a_check_failure_shows_the_test_line_and_the_message_not_the_checks_source(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import torch
        from mlcheck.checks import assert_loss_decreases, assert_output_shape

        def test_shape():
            assert_output_shape(torch.nn.Linear(4, 3), torch.zeros(2, 4), ("B", 4))

        def test_detached():
            model = torch.nn.Linear(4, 3)
            batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
            loss = lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]).detach()
            assert_loss_decreases(model, batch, loss_fn=loss)
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert ">       assert_output_shape(torch.nn.Linear(4, 3)" in out
    assert ">       assert_loss_decreases(model, batch, loss_fn=loss)" in out
    assert "E       mlcheck.errors.CheckFailed: assert_output_shape: output shape" in out
    # none of the checks' own source or docstrings
    assert "def assert_output_shape" not in out and "Statistical design" not in out
    assert "_training.py" not in out and "shapes.py" not in out
    # the detached loss is a check failure that says so, not torch's autograd RuntimeError
    assert "the loss has no grad_fn: it was detached or computed under no_grad" in out
    assert "does not require grad" not in out
