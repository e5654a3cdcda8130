"""The one place the app loads models: a store shared by all sessions.

Models are cached in a ``st.cache_resource`` store, so every session shares
them and nobody ever trains them in place (training pages copy first).
Fine-tuned models are registered here so every page can offer them.
"""
from __future__ import annotations

import threading
from pathlib import Path
from collections import OrderedDict

import streamlit as st

from gpt_core.errors import GPTCoreError
from gpt_core import registry
from gpt_core.hub import hub_reachable
from gpt_core.registry import LoadedModel, is_available_offline, list_sources, load_with_fallback

from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import number, plain, say
from explorer.ui.state import guard_url

MODEL_KEY = "app.model"
DEVICE_KEY = "app.device"
LOCAL_KEY = "app.local_dir"
LOCAL_FAILED_KEY = "app.local_refused"  # (folder, why) of the last folder the local box could not load
MAX_LOADED = 3
OFFLINE_TTL_S = 300  # how long "which models load without the network" is trusted


def default_model(lang: str) -> str:
    """The model a page starts with in the UI language ``lang`` (one that speaks it)."""
    return registry.default_model(lang)


class ModelStore:
    """Thread-safe LRU of loaded models, plus models fine-tuned in this server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._loaded: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self.custom: dict[str, LoadedModel] = {}

    def peek(self, key: str, device: str) -> LoadedModel | None:
        if key in self.custom:
            return self.custom[key]
        with self._lock:
            lm = self._loaded.get((key, device))
            if lm is not None:
                self._loaded.move_to_end((key, device))
            return lm

    def load(self, key: str, device: str, progress=None) -> LoadedModel:
        found = self.peek(key, device)
        if found is not None:
            return found
        with self._lock:
            key_lock = self._key_locks.setdefault((key, device), threading.Lock())
        with key_lock:
            found = self.peek(key, device)
            if found is not None:
                return found
            lm = load_with_fallback(key, device=device, progress=progress)
            with self._lock:
                self._loaded[(key, device)] = lm
                while len(self._loaded) > MAX_LOADED:
                    self._loaded.popitem(last=False)
            return lm

    def register(self, name: str, lm: LoadedModel) -> None:
        """Offer a fine-tuned model to every page (kept until the server stops)."""
        self.custom[name] = lm


@st.cache_resource(show_spinner=False)
def store() -> ModelStore:
    return ModelStore()


def available_devices() -> list[str]:
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def label_of(source) -> str:
    """The source's label in the UI language: the page's own (``model.<key>``), else the registry's said."""
    text = t(f"model.{source.key}")
    if text != f"model.{source.key}":
        return text
    return say(source.label_message) if source.label_message is not None else source.label


def tokenizer_label(tokenizer) -> str:
    """A tokenizer's name in the UI language (``tokenizer.opt.<name>``), else its own label."""
    key = f"tokenizer.opt.{getattr(tokenizer, 'name', '')}"
    text = t(key, vocab=number(int(getattr(tokenizer, "vocab_size", 0) or 0), current_lang()))
    return text if text != key else tokenizer.label


@st.cache_data(ttl=OFFLINE_TTL_S, show_spinner=False)
def _unavailable(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The hub models among ``keys`` that cannot load now: not in the local cache, and the hub out of reach."""
    missing = tuple(k for k in keys if not is_available_offline(k))
    return missing if missing and not hub_reachable() else ()


def unavailable_models() -> dict[str, str]:
    """key -> short name of the built-in models that need the hub while it cannot be reached."""
    hub = {s.key: s for s in list_sources() if s.kind == "hub" and s.family != "hf-seq2seq"}
    return {k: label_of(hub[k]).split(" — ")[0] for k in _unavailable(tuple(hub))}


def model_choices() -> dict[str, str]:
    """key -> label of the models that can load now: embedded first, then hub sources, fine-tuned models, tests.

    Hub models out of reach offline are left out (:func:`unavailable_models` names them)."""
    # seq2seq models (BARThez) are for the tokenizer lab; the model pages need a causal LM
    missing = unavailable_models()
    choices = {s.key: label_of(s) for s in list_sources() if s.family != "hf-seq2seq" and s.key not in missing}
    for name in store().custom:
        choices[name] = t("sidebar.finetuned", name=name)
    return choices


# what a local folder can be refused for: one sentence for all, so a visitor cannot probe the server's disk
LOCAL_REFUSALS = {"registry.folder_missing", "registry.not_a_folder", "registry.no_config", "registry.config_unreadable",
                  "registry.config_not_model", "registry.no_weights", "registry.checkpoint_no_weights",
                  "registry.no_model_type", "registry.bad_key"}


def local_folder(text) -> str | None:
    """The local box's text as an absolute folder path (never a hub id: the box loads from this disk only)."""
    text = text.strip() if isinstance(text, str) else ""
    if not text:
        return None
    try:
        return str(Path(text[:500]).expanduser().resolve())
    except (RuntimeError, OSError, ValueError):  # an unknown ~user, a NUL byte...: no such folder
        return str(Path("/") / "nonexistent-folder")


def _wanted_key() -> str:
    """The model the session asks for; a hub model out of reach is replaced by the default, with a notice."""
    fallback = default_model(current_lang())
    key = st.session_state.get(MODEL_KEY) or fallback
    if key == "local":
        folder = local_folder(st.session_state.get(LOCAL_KEY))
        refused = st.session_state.get(LOCAL_FAILED_KEY)
        return fallback if not folder or (refused and refused[0] == folder) else folder
    missing = unavailable_models()
    if key in missing:
        st.warning(t("sidebar.unavailable_used_default", name=plain(missing[key])), icon=":material/warning:")
        st.session_state[MODEL_KEY] = fallback
        return fallback
    return key


def local_refusal() -> str | None:
    """Why the folder typed in the local box cannot be loaded (said under the box), or None."""
    refused = st.session_state.get(LOCAL_FAILED_KEY)
    typed = local_folder(st.session_state.get(LOCAL_KEY))
    if st.session_state.get(MODEL_KEY) == "local" and refused and refused[0] == typed:
        return t("sidebar.load_error", reason=plain(refused[1]))
    return None


def current_model() -> LoadedModel:
    """The model chosen in the sidebar, loaded with a progress bar the first time."""
    guard_url()  # a page run on its own (tests) checks its URL too; idempotent after the sidebar's call
    key = _wanted_key()
    device = st.session_state.get(DEVICE_KEY, "cpu")
    found = store().peek(key, device)
    if found is not None:
        return found
    bar = st.progress(0.0, text=t("sidebar.loading", name=key))

    def progress(fraction: float, message) -> None:  # message: a gpt_core Message
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=plain(say(message)))

    try:
        lm = store().load(key, device, progress)
    except GPTCoreError as exc:  # a bad local directory, for instance
        bar.empty()
        fallback = default_model(current_lang())
        if st.session_state.get(MODEL_KEY) == "local":  # the box stays open (the sidebar says why): another folder
            why = t("sidebar.local_unusable") if getattr(exc, "code", "") in LOCAL_REFUSALS else say(exc)
            st.session_state[LOCAL_FAILED_KEY] = (key, why)
        else:
            st.error(t("sidebar.load_error", reason=plain(say(exc))))
            st.session_state[MODEL_KEY] = fallback
        lm = store().load(fallback, device, None)
    bar.empty()
    return lm
