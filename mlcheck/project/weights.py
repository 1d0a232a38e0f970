"""What a weights file is: the one vocabulary the manifest, the lock and the cache share.

Three kinds, by file name:

- *safe* weights (``*.safetensors``): loaded by default;
- *pickle* weights (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``): loading can run arbitrary
  code, so only with ``allow_pickle = true`` for the model in the manifest;
- *other* weights (``*.h5``, ``*.msgpack``, ``*.onnx``: TensorFlow, Flax, ONNX): torch does
  not load them, but they are weights all the same: large, pinned by sha256 like Git LFS
  stores them, and left out of what the fast tier needs or downloads.

>>> is_weights_file("sharded/model-00001-of-00002.safetensors"), is_weights_file("tf_model.h5")
(True, True)
>>> is_weights_file("config.json"), is_pickle("pytorch_model.bin")
(False, True)
>>> loadable_patterns(allow_pickle=False)
('*.safetensors',)
"""

from __future__ import annotations

from pathlib import PurePosixPath

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
OTHER_SUFFIXES = (".h5", ".msgpack", ".onnx")
SUFFIXES = SAFE_SUFFIXES + PICKLE_SUFFIXES + OTHER_SUFFIXES

# As glob patterns (what the manifest's `needs` adds to the files it locks and downloads).
# fnmatch's "*" crosses "/", so "*.safetensors" also matches "sub/model.safetensors".
SAFE_PATTERNS = tuple("*" + s for s in SAFE_SUFFIXES)
PICKLE_PATTERNS = tuple("*" + s for s in PICKLE_SUFFIXES)


def is_weights_file(path: str) -> bool:
    """Whether ``path`` (a repository path or file name) holds weights, in any format."""
    return PurePosixPath(path).name.endswith(SUFFIXES)


def is_pickle(path: str) -> bool:
    """Whether ``path`` holds pickle weights (loading them can run arbitrary code)."""
    return PurePosixPath(path).name.endswith(PICKLE_SUFFIXES)


def loadable_patterns(*, allow_pickle: bool) -> tuple[str, ...]:
    """The patterns of the weights mlcheck loads: safetensors, and pickle when allowed."""
    return SAFE_PATTERNS + (PICKLE_PATTERNS if allow_pickle else ())
