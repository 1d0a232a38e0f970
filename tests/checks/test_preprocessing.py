"""assert_labels_survive (mlcheck/checks/preprocessing.py) pass on correct models and fail, with a
message naming the likely bug, on planted bugs.

Real tiny models: Hugging Face models built from configs and small torch modules
(tests/tiny_models.py); 1 torch thread (conftest).
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import SEEDS

from mlcheck.checks import (
    CheckFailed,
)


def test_labels_survive_names_the_example_whose_answer_was_truncated_away() -> None:
    from mlcheck.checks import assert_labels_survive

    def preprocess(example: dict[str, str], keep_answer: bool) -> dict[str, list[int]]:
        prompt = [ord(c) for c in example["prompt"]]
        answer = [ord(c) for c in example["answer"]]
        if keep_answer:  # the twin: truncate the prompt, keep the answer
            prompt = prompt[: max(0, 16 - len(answer))]
        ids = (prompt + answer)[:16]
        labels = ([-100] * len(prompt) + answer)[:16]
        return {"input_ids": ids, "labels": labels}

    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        short = int(torch.randint(2, 8, (1,), generator=g))
        examples = [
            {"prompt": "q" * short, "answer": "yes"},
            {"prompt": "x" * (20 + seed), "answer": "no"},
        ]
        with pytest.raises(CheckFailed) as failed:
            assert_labels_survive(lambda e: preprocess(e, keep_answer=False), examples)
        text = str(failed.value)
        assert f"example 1 (prompt: {20 + seed} chars, answer: 2 chars)" in text
        assert "16 input tokens, 16 labels, all -100" in text and "truncation" in text
        assert assert_labels_survive(lambda e: preprocess(e, keep_answer=True), examples) == [3, 2]
