"""The ``models`` fixture: models built from the local cache only, never from the network.

``ModelFactory`` turns a model id (``"org/name"`` in the Hugging Face cache, or a local folder)
into a config, a tiny random model, a full-size model on the meta device, the real pinned
weights, or a tokenizer. Where the files are, and which safety options apply, is ``locate``'s
business (``mlcheck.project.cache.locate``, which reads the manifest and lock): this module
only loads.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from .. import records as _record
from ..constants import DEFAULT_SEED
from ..errors import (
    ModelNotCached,
    RealWeightsInFastTest,
    UnknownName,
    UnsafeModel,
    UsageError,
    hide_frame,
)
from ..project.cache import LocalModel
from ..project.weights import PICKLE_PATTERNS

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

    from ..project.lock import Project
    from .load_cache import ModelCache

__all__ = ["TASKS", "ModelFactory"]

# task name -> transformers auto class; None means the bare model (hidden states)
TASKS: dict[str | None, str] = {
    None: "AutoModel",
    "feature-extraction": "AutoModel",
    "base": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "multiple-choice": "AutoModelForMultipleChoice",
    "causal-lm": "AutoModelForCausalLM",
    "text-generation": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "fill-mask": "AutoModelForMaskedLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "text2text-generation": "AutoModelForSeq2SeqLM",
    "pretraining": "AutoModelForPreTraining",
    "image-classification": "AutoModelForImageClassification",
    "zero-shot-image-classification": "AutoModelForZeroShotImageClassification",
    "object-detection": "AutoModelForObjectDetection",
    "semantic-segmentation": "AutoModelForSemanticSegmentation",
    "masked-image-modeling": "AutoModelForMaskedImageModeling",
    "image-text-to-text": "AutoModelForImageTextToText",
    "audio-classification": "AutoModelForAudioClassification",
    "ctc": "AutoModelForCTC",
    "speech-seq2seq": "AutoModelForSpeechSeq2Seq",
}


# any of these means the folder has a tokenizer
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "*.model",
    "*.tiktoken",
)


class Locate(Protocol):
    """The signature of :func:`mlcheck.project.cache.locate` that the factory relies on."""

    def __call__(self, model_id: str, *, need: Any = ...) -> LocalModel: ...


OnUse = Callable[[str, str | None, str], None]


class ModelFactory:
    """Build models for tests from the local cache (the ``models`` pytest fixture).

    ``locate`` finds a model's files (default :func:`mlcheck.project.cache.locate`); ``seed`` seeds
    :meth:`random`; ``on_use(model_id, revision, kind)`` is told about every model used, with
    ``kind`` one of ``config``, ``random``, ``empty``, ``real``, ``tokenizer``. With a ``cache``
    (:class:`mlcheck.models.load_cache.ModelCache`; the fixture passes its worker's), :meth:`real`
    hands out the cached model while it is unchanged, and :meth:`release` (after the test)
    evicts the models the test changed.

    >>> models = ModelFactory(seed=0)
    >>> from transformers import BertConfig
    >>> models.random(BertConfig(), task="sequence-classification").config.num_hidden_layers
    2
    """

    # The running test's id when its tier is fast (set by the pytest plugin): the fast tier
    # fetches no weights in CI, so `real` refuses there even where the weights are cached.
    fast_test: str | None = None

    def __init__(
        self,
        *,
        locate: Locate | None = None,
        seed: int = DEFAULT_SEED,
        on_use: OnUse | None = None,
        cache: ModelCache | None = None,
    ) -> None:
        if locate is None:
            from ..project.cache import locate as default_locate

            locate = default_locate
        self._locate = _recording_misses(locate)
        self.seed = seed
        self._on_use = on_use
        self._cache = cache
        self._handed: list[Any] = []  # cached models this factory handed out

    # -- public API ------------------------------------------------------------------------

    def config(self, model_id: str, **overrides: Any) -> PretrainedConfig:
        """The model's config from the cache, with ``overrides`` applied.

        >>> models.config("bert-base-uncased", num_labels=3).num_labels  # doctest: +SKIP
        3
        """
        __tracebackhide__ = hide_frame
        return self._config(model_id, "config", overrides)

    def random(
        self,
        model_id_or_config: str | PretrainedConfig,
        task: str | None = None,
        tiny: bool | Mapping[str, Any] = True,
        seed: int | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> PreTrainedModel:
        """A model with random weights, in eval mode, float32 unless ``dtype`` says otherwise.

        ``tiny=True`` shrinks the config first (:func:`mlcheck.shrink`), so a forward pass takes
        milliseconds; a mapping passes its items to ``shrink`` (``tiny={"layers": 1}``);
        ``tiny=False`` builds the full size. The same ``seed`` (default: the factory's) gives the
        same weights, and the global torch random state is left as it was.

        >>> model = models.random("meta-llama/Llama-3.1-8B", task="causal-lm")  # doctest: +SKIP
        >>> model.config.num_hidden_layers, model.config.num_key_value_heads  # doctest: +SKIP
        (2, 2)
        """
        __tracebackhide__ = hide_frame
        import torch

        from ..shrinking import shrink

        config = self._resolve(model_id_or_config, "random")
        if tiny:
            config = shrink(config, **(tiny if isinstance(tiny, Mapping) else {}))
        auto = self._auto_class(task)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed if seed is None else seed)
            model = self._random_once(auto, config, task, dtype=dtype or torch.float32)
        return model.eval()

    def _random_once(
        self, auto: Any, config: PretrainedConfig, task: str | None, dtype: torch.dtype
    ) -> PreTrainedModel:
        """``from_config`` with one init pass instead of two.

        A plain ``from_config`` initialises every weight twice: torch's default init in each
        layer's constructor, then the model's own ``_init_weights``; for the 32k-50k-row
        embeddings that T5 and BART keep, that is most of the build. Built under transformers'
        ``no_init_weights`` (both skipped), then ``init_weights()`` once, the model gets exactly
        the init its authors wrote — the path ``from_pretrained`` takes for missing weights,
        which transformers' own tests check covers every parameter of its models. Models from a
        repository's own code have no such guarantee: they keep the double init.
        """
        if not type(config).__module__.startswith("transformers."):
            return self._from_config(auto, config, task, dtype=dtype)
        from transformers.initialization import no_init_weights

        with no_init_weights():
            model = self._from_config(auto, config, task, dtype=dtype)
        # Tied targets (lm_head -> embeddings; T5 and BART tie three or four 32k-50k-row
        # matrices to one) are overwritten by their source when init_weights ties them: skip
        # their init, as from_pretrained does (mark_tied_weights_as_initialized). The flag is
        # what transformers' init functions check; it comes off again after.
        tied = getattr(model, "all_tied_weights_keys", {})
        targets = [model.get_parameter(name) for name in tied]
        for param in targets:
            param._is_hf_initialized = True  # type: ignore[attr-defined]
        try:
            model.init_weights()
        finally:
            for param in targets:
                if "_is_hf_initialized" in vars(param):
                    del param._is_hf_initialized  # type: ignore[attr-defined]
        return model

    def empty(
        self,
        model_id_or_config: str | PretrainedConfig,
        task: str | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> PreTrainedModel:
        """The full-size model on the meta device: shapes and parameter counts, no memory.

        Parameters and buffers are on ``meta``; ``dtype`` defaults to the config's (so
        ``model.get_memory_footprint()`` estimates the real thing), else float32. Attention (and
        MoE experts) use implementations that run on meta tensors, so a forward pass on meta
        inputs gives output shapes.

        >>> model = models.empty("meta-llama/Llama-2-7b-hf", task="causal-lm")  # doctest: +SKIP
        >>> model.num_parameters()  # doctest: +SKIP
        6738415616
        """
        __tracebackhide__ = hide_frame
        import torch

        config = self._resolve(model_id_or_config, "empty")
        auto = self._auto_class(task)
        # a meta device context puts buffers (rotary tables) on meta too, so meta forwards work,
        # and transformers skips weight init entirely under it
        kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}  # None: the config's
        # Implementations whose code needs no tensor values, so forward passes run on meta (the
        # results are the same; only the kernels differ). Unless the config picked its own:
        if getattr(config, "_attn_implementation_internal", "set") is None:
            kwargs["attn_implementation"] = "eager"  # sdpa's mask code calls .item() (BART)
        if getattr(config, "_experts_implementation_internal", "set") is None:
            # grouped_mm has no float32 meta kernel; eager expert routing calls nonzero()
            kwargs["experts_implementation"] = "batched_mm"
        with torch.device("meta"):
            model = self._from_config(auto, config, task, **kwargs)
        return model.eval()

    def real(
        self,
        model_id: str,
        task: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        *,
        fresh: bool = False,
    ) -> PreTrainedModel:
        """The real weights at the pinned revision, in eval mode, moved to ``device`` if given.

        Only safetensors are loaded unless the manifest sets ``allow_pickle`` for the model, and a
        model that needs its own code is refused unless the manifest sets ``trust_remote_code``.
        Under pytest the model is loaded once per worker and the same object handed to later
        tests while it is unchanged (a test that changes it gets the next test a fresh copy);
        ``fresh=True`` loads a copy of this test's own.

        >>> model = models.real("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
        """
        __tracebackhide__ = hide_frame
        if self.fast_test is not None:  # see fast_test: fail here as CI's fast job would
            raise RealWeightsInFastTest(model_id, self.fast_test)
        local = self._weights(model_id)
        self._check_remote_code(local)
        auto = self._auto_class(task)
        load = partial(self._load_real, local, auto, task, device, dtype)
        if self._cache is None or fresh:
            model, how = load(), "loaded"
        else:
            where = None if device is None else str(device)
            key = (
                local.model_id,
                local.revision,
                str(local.path),
                auto.__name__,
                str(dtype),
                where,
                local.trust_remote_code,
                local.allow_pickle,
            )
            model, how = self._cache.get(key, load)
            self._handed.append(model)
        self._used(local.model_id, local.revision, "real")
        record_load(local.model_id, local.revision, how)
        return model

    def release(self) -> list[str]:
        """After a test: evict the cached models it changed; what changed in each, in words."""
        handed, self._handed = self._handed, []
        if self._cache is None:
            return []
        seen: set[int] = set()
        changes = []
        for model in handed:
            if id(model) not in seen:
                seen.add(id(model))
                changes.append(self._cache.release(model))
        return [c for c in changes if c]

    def _load_real(
        self,
        local: LocalModel,
        auto: Any,
        task: str | None,
        device: str | torch.device | None,
        dtype: torch.dtype | None,
    ) -> PreTrainedModel:
        __tracebackhide__ = hide_frame
        kwargs: dict[str, Any] = {
            "local_files_only": True,
            "trust_remote_code": local.trust_remote_code,
            # None lets transformers fall back to pickle when safetensors are absent
            "use_safetensors": None if local.allow_pickle else True,
        }
        if dtype is not None:
            kwargs["dtype"] = dtype
        try:
            model = auto.from_pretrained(str(local.path), **kwargs)
        except (OSError, ValueError) as exc:
            self._raise_load_error(local, task, exc)
        model.eval()
        if device is not None:
            model.to(device)
        return model

    def tokenizer(self, model_id: str) -> Any:
        """The model's tokenizer from the cache.

        >>> models.tokenizer("sentence-transformers/all-MiniLM-L6-v2")("hi")  # doctest: +SKIP
        """
        __tracebackhide__ = hide_frame
        from transformers import AutoTokenizer

        local = self._locate(model_id, need="config")
        self._check_remote_code(local)
        # transformers 5 builds an empty (5-token) tokenizer when the files are missing
        if not any(next(local.path.glob(p), None) for p in _TOKENIZER_FILES):
            raise ModelNotCached(model_id, local.revision, f"no tokenizer files in {local.path}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(local.path), local_files_only=True, trust_remote_code=local.trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise ModelNotCached(
                model_id, local.revision, f"no usable tokenizer files in {local.path}: {exc}"
            ) from exc
        self._used(local.model_id, local.revision, "tokenizer")
        return tokenizer

    # -- helpers ---------------------------------------------------------------------------

    def _config(self, model_id: str, kind: str, overrides: Mapping[str, Any]) -> PretrainedConfig:
        __tracebackhide__ = hide_frame
        from transformers import AutoConfig

        local = self._locate(model_id, need="config")
        self._check_remote_code(local)
        try:
            config = AutoConfig.from_pretrained(
                str(local.path),
                local_files_only=True,
                trust_remote_code=local.trust_remote_code,
                **overrides,
            )
        except (OSError, ValueError) as exc:
            self._raise_load_error(local, None, exc)
        self._used(local.model_id, local.revision, kind)
        return config

    def _resolve(self, model_id_or_config: str | PretrainedConfig, kind: str) -> PretrainedConfig:
        __tracebackhide__ = hide_frame
        if isinstance(model_id_or_config, str | Path):
            return self._config(str(model_id_or_config), kind, {})
        # from_config writes the dtype into the config: never touch the caller's object
        return copy.deepcopy(model_id_or_config)

    def _weights(self, model_id: str) -> LocalModel:
        __tracebackhide__ = hide_frame
        try:
            return self._locate(model_id, need="weights")
        except ModelNotCached as missing:
            try:
                local = self._locate(model_id, need="config")
            except ModelNotCached:
                raise missing from None  # its message names the fix for the weights
            pickles = sorted(
                str(p.relative_to(local.path))
                for pattern in PICKLE_PATTERNS
                for p in local.path.rglob(pattern)
            )
            if pickles and not local.allow_pickle:
                raise UnsafeModel(
                    f"'{model_id}' has only pickle weights ({', '.join(pickles[:3])}); loading "
                    "pickle can run arbitrary code. Convert them to safetensors, or set "
                    f'allow_pickle = true for "{model_id}" in [tool.mlcheck.models]'
                ) from None
            raise

    def _check_remote_code(self, local: LocalModel) -> None:
        __tracebackhide__ = hide_frame
        if local.trust_remote_code:
            return
        custom = _custom_code(local.path)
        if custom:
            raise UnsafeModel(
                f"'{local.model_id}' needs its own code ({custom}) and mlcheck does not run a "
                "model's code unless told to: set trust_remote_code = true for "
                f'"{local.model_id}" in [tool.mlcheck.models] if you trust it'
            )

    def _auto_class(self, task: str | None) -> Any:
        __tracebackhide__ = hide_frame
        import transformers

        name = TASKS.get(task)
        if name is None:
            valid = ", ".join(sorted(t for t in TASKS if t is not None))
            raise UnknownName(f"unknown task {task!r}; valid tasks: {valid} (or None)")
        return getattr(transformers, name)

    def _from_config(
        self, auto: Any, config: PretrainedConfig, task: str | None, **kwargs: Any
    ) -> PreTrainedModel:
        __tracebackhide__ = hide_frame
        # a config class from outside transformers came from a model's own code, which was
        # already vetted (and run) when the config was loaded
        trust = not type(config).__module__.startswith("transformers.")
        try:
            return auto.from_config(config, trust_remote_code=trust, **kwargs)
        except ValueError as exc:
            if "Unrecognized configuration class" in str(exc):
                raise UsageError(
                    f"task {task!r} has no model class for model type "
                    f"{config.model_type!r} ({auto.__name__})"
                ) from exc
            raise

    def _raise_load_error(self, local: LocalModel, task: str | None, exc: Exception) -> NoReturn:
        __tracebackhide__ = hide_frame
        error = self._load_error(local, task, exc)
        if isinstance(error, ModelNotCached):
            # transformers' error wraps the hub library's, whose advice is wrong in a test:
            # shown under -v only (the plugin chains it back)
            error.hub_cause = exc
            raise error from None
        raise error from exc

    def _load_error(self, local: LocalModel, task: str | None, exc: Exception) -> Exception:
        text = str(exc)
        if "trust_remote_code" in text:
            return UnsafeModel(f"'{local.model_id}': {text.splitlines()[0]}")
        if "Unrecognized configuration class" in text:
            return UsageError(f"task {task!r} is not available for '{local.model_id}': {text}")
        record_model(local.model_id, local.revision, cache_hit=False)
        return ModelNotCached(local.model_id, local.revision, text.splitlines()[0] if text else "")

    def _used(self, model_id: str, revision: str | None, kind: str) -> None:
        if self._on_use is not None:
            self._on_use(model_id, revision, kind)
        # files are only ever read from the cache (never downloaded during a test): a hub model
        # that loaded was a cache hit; a local folder is not in the cache at all
        local_folder = Path(model_id).expanduser().is_dir()
        record_model(model_id, revision, cache_hit=None if local_folder else True)


def record_model(model_id: str, revision: str | None, *, cache_hit: bool | None) -> None:
    """Tell the running test's record which model it used and whether the cache had it."""
    _record.append("models", {"id": model_id, "revision": revision, "cache_hit": cache_hit})


def record_load(model_id: str, revision: str | None, how: str) -> None:
    """Tell the running test's record whether ``models.real`` loaded the model or reused it
    (``"loaded"`` wins when a test got both)."""
    facts = _record.current()
    if facts is None:
        return
    for item in reversed(facts.get("models") or []):
        if item.get("id") == model_id and item.get("revision") == revision:
            if item.get("load") != "loaded":
                item["load"] = how
            return


def weights_problem(model_id: str, project: Project) -> str | None:
    """Why the pinned weights of ``model_id`` cannot load here (None: they are cached), with
    the cache hit or miss recorded for the running test."""
    from ..project.cache import locate

    try:
        local = locate(model_id, need="weights", project=project)
    except ModelNotCached as exc:
        record_model(model_id, exc.revision, cache_hit=False)
        return str(exc)
    record_model(model_id, local.revision, cache_hit=True)
    return None


def _recording_misses(locate: Locate) -> Locate:
    """``locate`` that records a cache miss before raising :class:`ModelNotCached`."""

    def wrapped(model_id: str, *, need: Any = "config") -> LocalModel:
        __tracebackhide__ = hide_frame
        try:
            return locate(model_id, need=need)
        except ModelNotCached as exc:
            record_model(exc.model_id, exc.revision, cache_hit=False)
            raise

    return wrapped


def _custom_code(folder: Path) -> str:
    """What custom code a model folder's config points at; '' when transformers has the class."""
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    auto_map = raw.get("auto_map") if isinstance(raw, dict) else None
    if not auto_map:
        return ""
    from transformers import CONFIG_MAPPING

    if raw.get("model_type") in CONFIG_MAPPING:
        return ""  # transformers ignores auto_map without trust_remote_code and uses its own class
    return ", ".join(sorted({str(v).split(".")[0] + ".py" for v in _flatten(auto_map)}))


def _flatten(auto_map: Any) -> list[str]:
    values = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
    flat: list[str] = []
    for value in values:
        if isinstance(value, list | tuple):
            flat.extend(str(v) for v in value if v)
        elif value:
            flat.append(str(value))
    return flat
