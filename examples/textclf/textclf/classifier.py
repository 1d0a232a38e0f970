"""The classifier: a MiniLM (BERT) encoder, sentence-transformers pooling, a linear head.

The encoder is any ``transformers`` encoder with a ``last_hidden_state`` (in production the real
all-MiniLM-L6-v2; in fast tests a shrunk random BERT from ``models.random``). The head is built
for the encoder's hidden size, or loaded from the trained weights in ``textclf/head/``.

>>> from transformers import AutoModel, AutoTokenizer
>>> clf = TextClassifier.from_pretrained(MODEL_DIR)  # doctest: +SKIP
>>> clf.predict(["I loved it"], AutoTokenizer.from_pretrained(MODEL_DIR))  # doctest: +SKIP
[{'label': 'positive', 'score': 0.97}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

DEFAULT_HEAD_DIR = Path(__file__).parent / "head"
DEFAULT_LABELS: dict[int, str] = {0: "negative", 1: "positive"}
HEAD_WEIGHTS = "head.safetensors"
HEAD_LABELS = "labels.json"
# all-MiniLM-L6-v2 embeds at most 256 tokens (its sentence_bert_config.json); we truncate alike
MAX_TOKENS = 256


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real (unpadded) tokens, then L2-normalise: sentence-transformers' pooling.

    >>> mean_pool(torch.ones(1, 3, 4), torch.tensor([[1, 1, 0]])).norm(dim=-1)
    tensor([1.])
    """
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    summed = (last_hidden_state * mask).sum(dim=1)
    # clamp: an all-padding row must not divide by zero (sentence-transformers does the same)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(summed / counts, p=2, dim=-1)


def tokenize(tokenizer: Any, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Tokenize a batch the way the classifier expects: padded, truncated to ``MAX_TOKENS``."""
    return dict(
        tokenizer(
            list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
    )


def load_head(head_dir: str | Path) -> tuple[nn.Linear, dict[int, str]]:
    """Load a trained head (``head.safetensors`` + ``labels.json``) written by ``train_head.py``."""
    head_dir = Path(head_dir)
    state = load_file(str(head_dir / HEAD_WEIGHTS))
    meta = json.loads((head_dir / HEAD_LABELS).read_text())
    num_labels, hidden_size = state["weight"].shape
    head = nn.Linear(hidden_size, num_labels)
    head.load_state_dict(state)
    id2label = {int(k): v for k, v in meta["id2label"].items()}
    if sorted(id2label) != list(range(num_labels)):
        raise ValueError(f"{head_dir}: id2label {id2label} does not match {num_labels} outputs")
    return head, id2label


def save_head(head: nn.Linear, id2label: Mapping[int, str], head_dir: str | Path) -> None:
    """Write a head: ``head.safetensors`` (weights), ``labels.json`` (what each index means)."""
    head_dir = Path(head_dir)
    head_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(head_dir / HEAD_WEIGHTS))
    meta = {"id2label": {str(k): v for k, v in sorted(id2label.items())}}
    (head_dir / HEAD_LABELS).write_text(json.dumps(meta, indent=2) + "\n")


class TextClassifier(nn.Module):
    """Encoder + mean pooling + L2 norm + linear head; returns ``SequenceClassifierOutput``.

    ``config.id2label`` says what each class index means, like a Hugging Face classifier.

    >>> clf = TextClassifier(encoder)  # doctest: +SKIP  (head sized for encoder.config)
    >>> clf(**tokenizer(["great"], return_tensors="pt")).logits.shape  # doctest: +SKIP
    torch.Size([1, 2])
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        *,
        head: nn.Linear | None = None,
        id2label: Mapping[int, str] | None = None,
        freeze_encoder: bool = False,
    ) -> None:
        super().__init__()
        id2label = dict(id2label or DEFAULT_LABELS)
        hidden_size = encoder.config.hidden_size
        if head is None:
            head = nn.Linear(hidden_size, len(id2label))
        if head.in_features != hidden_size:
            raise ValueError(
                f"the head takes {head.in_features}-d embeddings but the encoder gives "
                f"{hidden_size}-d ones: train a head for this encoder (train_head.py)"
            )
        if head.out_features != len(id2label):
            raise ValueError(f"the head has {head.out_features} outputs for labels {id2label}")
        self.encoder = encoder
        # named `classifier` like Hugging Face heads, so tools find it (mlcheck's assert_labels)
        self.classifier = head
        self.config = PretrainedConfig(
            id2label=id2label, label2id={label: i for i, label in id2label.items()}
        )
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    @classmethod
    def from_encoder(
        cls,
        encoder: PreTrainedModel,
        head_dir: str | Path = DEFAULT_HEAD_DIR,
        *,
        freeze_encoder: bool = False,
    ) -> TextClassifier:
        """Attach the trained head from ``head_dir`` to an already-loaded encoder."""
        head, id2label = load_head(head_dir)
        head.to(device=encoder.device, dtype=encoder.dtype)
        return cls(encoder, head=head, id2label=id2label, freeze_encoder=freeze_encoder)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        head_dir: str | Path | None = None,
        *,
        freeze_encoder: bool = False,
        output_loading_info: bool = False,
        **encoder_kwargs: Any,
    ) -> Any:
        """Load the encoder from ``path``; the head from ``path/head`` if saved there, else
        ``head_dir`` (default: the trained head shipped with the package).

        ``output_loading_info=True`` returns ``(classifier, info)`` as Hugging Face models do,
        with the encoder's missing/unexpected keys under ``encoder.``.
        """
        path = Path(path)
        loaded = AutoModel.from_pretrained(
            path, output_loading_info=output_loading_info, **encoder_kwargs
        )
        encoder, info = loaded if output_loading_info else (loaded, {})
        if head_dir is None:
            head_dir = (
                path / "head" if (path / "head" / HEAD_WEIGHTS).is_file() else DEFAULT_HEAD_DIR
            )
        clf = cls.from_encoder(encoder, head_dir, freeze_encoder=freeze_encoder)
        if not output_loading_info:
            return clf
        prefixed = {key: [f"encoder.{k}" for k in keys] for key, keys in info.items()}
        return clf, prefixed

    @property
    def id2label(self) -> dict[int, str]:
        """What each class index means (from ``config.id2label``)."""
        return {int(k): v for k, v in (self.config.id2label or {}).items()}

    def save_pretrained(self, path: str | Path) -> None:
        """Write the encoder (``config.json``, ``model.safetensors``) and ``head/`` to ``path``."""
        path = Path(path)
        self.encoder.save_pretrained(path)
        save_head(self.classifier, self.id2label, path / "head")

    def train(self, mode: bool = True) -> TextClassifier:
        super().train(mode)
        if self.freeze_encoder:
            # a frozen encoder is a fixed feature extractor: no dropout noise while the head trains
            self.encoder.eval()
        return self

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sentence embeddings, shape ``(batch, hidden_size)``, unit L2 norm."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return mean_pool(out.last_hidden_state, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        logits = self.classifier(self.embed(input_ids, attention_mask, token_type_ids))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    @torch.inference_mode()
    def predict(
        self, texts: Sequence[str], tokenizer: Any, *, batch_size: int = 32
    ) -> list[dict[str, Any]]:
        """``[{"label": ..., "score": probability}, ...]``, one per text, in order."""
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts, not one string")
        id2label = self.id2label
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        results: list[dict[str, Any]] = []
        try:
            for start in range(0, len(texts), batch_size):
                batch = tokenize(tokenizer, texts[start : start + batch_size])
                batch = {k: v.to(device) for k, v in batch.items()}
                probs = self(**batch).logits.float().softmax(dim=-1)
                scores, indices = probs.max(dim=-1)
                for score, index in zip(scores.tolist(), indices.tolist(), strict=True):
                    results.append({"label": id2label[index], "score": score})
        finally:
            self.train(was_training)
        return results
