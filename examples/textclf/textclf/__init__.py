"""textclf: sentiment classification on all-MiniLM-L6-v2 sentence embeddings.

The encoder is sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT), pooled the way
sentence-transformers pools it (mean over real tokens, then L2-normalised); a small trained
linear head (``textclf/head/``) maps the 384-d embedding to ``{0: "negative", 1: "positive"}``.

>>> from textclf import TextClassifier
>>> clf = TextClassifier.from_pretrained("/path/to/all-MiniLM-L6-v2")  # doctest: +SKIP
>>> clf.predict(["What a wonderful film!"], tokenizer)  # doctest: +SKIP
[{'label': 'positive', 'score': 0.98}]
"""

from textclf.classifier import DEFAULT_HEAD_DIR, TextClassifier, load_head, mean_pool

__all__ = ["DEFAULT_HEAD_DIR", "TextClassifier", "load_head", "mean_pool"]
