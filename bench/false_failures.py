"""Measured false-failure rates of the training checks' defaults on correct models (not a test).

For the calibration models of ``tests/scenarios/test_checks_across_seeds.py`` (an MLP, a
tiny BERT classifier, a tiny GPT-2 LM), over ``--seeds`` seeds:

- ``assert_overfits``: how many steps the loss target alone takes, how many the full rule
  (loss target *and* every prediction right) takes, and how many seeds fail the full rule
  within the default 300 steps;
- ``assert_train_mode``: how many seeds fail (two training-mode forwards equal) on BERT and
  GPT-2, and on the worst case its docstring computes: one 32-unit layer at p=0.1 and a
  one-row batch, where equal forwards have probability (0.9^2 + 0.1^2)^32 = 1.7e-3.

- ``--sweep``: every check of ``tests/scenarios/test_checks_across_seeds.py``'s ``CHECKS``
  (the public API, as a test calls it: ``assert_overfits`` with its early verdict,
  ``assert_loss_matches`` with the gradient comparison, ``assert_params_update`` with the
  unregistered-container rule,
  ``assert_grad_accumulation``, ``assert_output_shape`` with its batch of one ...) on the three
  calibration models over ``--seeds`` seeds: runs, failures and the 95% upper bound of the
  false-failure rate (exact binomial; 3/n, the rule of three, when none failed).

Usage::

    python bench/false_failures.py [--seeds 50] [--worst-case-seeds 5000]
    python bench/false_failures.py --sweep --seeds 100 [--checks overfits,grad_accumulation]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_checks_seeds import CHECKS, SKIP, bert, gpt2, mlp  # the calibration models

from mlcheck.checks import CheckFailed, assert_train_mode
from mlcheck.checks._training import _train

STEPS, LR, RATIO = 300, 3e-3, 0.1  # assert_overfits' defaults


def overfits(seeds: int) -> None:
    print("assert_overfits (defaults: Adam lr=3e-3, loss / 10, accuracy 1.0, 300 steps)")
    for family in (mlp, bert, gpt2):
        loss_only, full, extra, fails = [], [], [], 0
        for seed in range(seeds):
            model, batch = family(seed)
            runs = []
            for judge in (False, True):
                run = _train(
                    model, batch, STEPS, LR, None, None, seed, True,
                    stop=lambda initial, loss: loss <= initial * RATIO, judge=judge,
                )  # fmt: skip
                runs.append(run)
            a, b = runs
            loss_only.append(len(a.curve))
            full.append(len(b.curve))
            extra.append(len(b.curve) - len(a.curve))
            met = b.final <= b.initial * RATIO and (b.fit is None or b.fit.perfect)
            fails += not met
        print(
            f"  {family.__name__:5} {seeds} seeds: loss target at step "
            f"{statistics.median(loss_only):.0f}"
            f" (median; max {max(loss_only)}); loss + accuracy at {statistics.median(full):.0f}"
            f" (max {max(full)}); extra steps median {statistics.median(extra):.0f}, max "
            f"{max(extra)}; failed {fails}/{seeds}"
        )


def train_mode(seeds: int, worst_seeds: int) -> None:
    print("assert_train_mode")
    for family in (bert, gpt2):
        fails = 0
        for seed in range(seeds):
            model, batch = family(seed)
            try:
                assert_train_mode(
                    model, {k: v for k, v in batch.items() if k != "labels"}, seed=seed
                )
            except CheckFailed:
                fails += 1
        print(f"  {family.__name__:5} {seeds} seeds: failed {fails}/{seeds}")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Dropout(0.1))
    x = torch.randn(1, 8)
    fails = 0
    for seed in range(worst_seeds):
        try:
            assert_train_mode(model, x, seed=seed)
        except CheckFailed:
            fails += 1
    print(
        f"  worst case (one 32-unit layer, p=0.1, one row) {worst_seeds} seeds: failed "
        f"{fails} = {fails / worst_seeds:.2g} (computed 0.82^32 = {0.82**32:.2g})"
    )


def upper_bound(failures: int, runs: int, confidence: float = 0.95) -> float:
    """One-sided upper bound of a binomial rate (Clopper-Pearson), by bisection: the largest p
    with P(X <= failures | p) >= 1 - confidence. By hand: a few lines instead of scipy."""
    from math import comb

    def cdf(p: float) -> float:
        return sum(comb(runs, k) * p**k * (1 - p) ** (runs - k) for k in range(failures + 1))

    lo, hi = failures / runs, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 1 - confidence else (lo, mid)
    return hi


def sweep(seeds: int, names: list[str]) -> None:
    print(f"public checks on correct models, {seeds} seeds each (test_checks_across_seeds.py)")
    total_runs = total_fails = 0
    for name in names:
        for family in (mlp, bert, gpt2):
            if (family.__name__, name) in SKIP:
                continue
            fails = []
            for seed in range(seeds):
                model, batch = family(seed)
                try:
                    CHECKS[name](model, batch, seed=seed)
                except CheckFailed as failed:
                    fails.append(f"seed {seed}: {str(failed).splitlines()[0]}")
            total_runs += seeds
            total_fails += len(fails)
            print(
                f"  {name:17} {family.__name__:5} runs {seeds}, failures {len(fails)}, 95% upper "
                f"bound {upper_bound(len(fails), seeds):.3g}"
                + "".join(f"\n    {f}" for f in fails),
                flush=True,
            )
    print(
        f"  all: runs {total_runs}, failures {total_fails}, 95% upper bound "
        f"{upper_bound(total_fails, total_runs):.3g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--worst-case-seeds", type=int, default=5000)
    parser.add_argument("--sweep", action="store_true", help="the public checks, see above")
    parser.add_argument("--checks", default=",".join(CHECKS), help="with --sweep: which ones")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.sweep:
        sweep(args.seeds, args.checks.split(","))
        return
    overfits(args.seeds)
    train_mode(args.seeds, args.worst_case_seeds)


if __name__ == "__main__":
    main()
