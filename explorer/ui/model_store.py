"""The one place the app loads models: a store shared by all sessions.

Models are cached in a ``st.cache_resource`` store, so every session shares
them and nobody ever trains them in place (training pages copy first).
Fine-tuned models are registered here so every page can offer them.

**One copy of each model.** The store keys what is actually loaded: a folder
by its real path (``/x``, ``/x/`` and ``//x/./`` are one model), a hub model
that cannot be reached by the embedded model that replaces it (``gpt2``,
``distilgpt2``... offline all share one copy of it, each with its own note).

**A memory budget.** The loaded models' parameters and buffers, plus the models
fine-tuned here, stay under :func:`explorer.settings.models_max_bytes`: the
least recently used loaded model is dropped first; the one just loaded is
always kept, even alone over the budget.

**Class mode.** When :func:`explorer.settings.allowed_models` names models,
only those are offered and loaded (the first one named is the default); the
local-folder box is not offered.
"""
from __future__ import annotations

import gc
import os
import threading
from pathlib import Path
from collections import OrderedDict

import streamlit as st
# Resolved once, under this module's import lock: the first lazy lookups of transformers' names are not
# thread-safe, and two students' first pages (or the preload thread) would make them at the same time.
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

from explorer import settings
from gpt_core.errors import GPTCoreError, InvalidInput
from gpt_core import registry
from gpt_core.hub import hub_reachable
from gpt_core.registry import LoadedModel, canonical_key, is_available_offline, list_sources, load_with_fallback

from explorer.ui.i18n import DEFAULT_LANG, current_lang, t
from explorer.ui.identity import owner
from explorer.ui.messages import number, plain, say
from explorer.ui.state import guard_url

MAX_CUSTOM = 6  # fine-tuned models held for the sidebars of the whole server (the oldest goes first)
MODEL_KEY = "app.model"
DEVICE_KEY = "app.device"
LOCAL_KEY = "app.local_dir"
LOCAL_FAILED_KEY = "app.local_refused"  # (folder, why) of the last folder the local box could not load
OFFLINE_TTL_S = 300  # how long "which models load without the network" is trusted
# loadable in class mode whatever the list: the Fine-tune page's random-weight starting point (a few MB)
ALWAYS_ALLOWED = frozenset({registry.TINY_MODEL})

Entry = tuple[str, str]  # (canonical key, device)


def class_models() -> list[str] | None:
    """Class mode: the allowed model keys, in the order the deployment lists them (None: every model)."""
    allowed = settings.allowed_models()
    if allowed is None:
        return None
    listed = [k.strip() for k in os.environ.get("LLM_EXPLORER_MODELS", "").split(",")]
    in_order = [k for k in dict.fromkeys(listed) if k in allowed]
    return in_order + sorted(allowed - set(in_order))


def _canonical(key) -> str | None:
    try:
        return canonical_key(key)
    except InvalidInput:
        return None


def is_allowed(key: str) -> bool:
    """May ``key`` be loaded? Always outside class mode; in class mode, a listed model (any spelling of it)."""
    allowed = settings.allowed_models()
    if allowed is None or key in allowed or key in ALWAYS_ALLOWED:
        return True
    wanted = _canonical(key)
    return wanted is not None and any(wanted == _canonical(k) for k in allowed)


def not_allowed(key: str) -> InvalidInput:
    """The refusal of a model outside the class's list: one sentence, with the models that are allowed."""
    return InvalidInput("model_limits.not_allowed", "This server is in class mode: the model '{key}' is not one "
                        "of the models chosen for the class ({allowed}).", key=str(key)[:100],
                        allowed=", ".join(class_models() or ()))


def default_model(lang: str) -> str:
    """The model a page starts with in the UI language ``lang`` (one that speaks it); in class mode, the
    first model of the class's list."""
    listed = class_models()
    return listed[0] if listed else registry.default_model(lang)


def _bytes(lm) -> int:
    return int(getattr(lm, "memory_bytes", 0) or 0)


def give_back_memory() -> None:
    """Free what a load or a dropped model left behind: reference cycles (Transformers models hold some), then
    the C heap's free pages (glibc keeps them otherwise: 0.27 GB after loading Gemma, measured)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the allocator keeps its own pages
        pass


class ModelStore:
    """Thread-safe cache of loaded models under a memory budget, plus the models fine-tuned in this server.

    ``_loaded`` holds one :class:`LoadedModel` per model actually loaded (its canonical key and device), in
    least-recently-used order. ``_aliases`` remembers the keys that fell back to another model (a hub model
    out of reach): each maps to the entry it shares and to its own view of it (same model, its own note).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key_locks: dict[Entry, threading.Lock] = {}
        self._loaded: OrderedDict[Entry, LoadedModel] = OrderedDict()
        self._aliases: dict[Entry, tuple[Entry, LoadedModel]] = {}
        self.custom: dict[str, LoadedModel] = {}
        self.custom_owner: dict[str, str | None] = {}  # who trained or reloaded each (None: offered to all)

    # ------------------------------------------------------------ lookup
    def _hit(self, entry: Entry) -> LoadedModel | None:
        """The model at ``entry`` (an alias's view, or the entry itself), marked as just used. Under the lock."""
        alias = self._aliases.get(entry)
        if alias is not None and alias[0] in self._loaded:
            self._loaded.move_to_end(alias[0])
            return alias[1]
        lm = self._loaded.get(entry)
        if lm is not None:
            self._loaded.move_to_end(entry)
        return lm

    def mine(self, owner: str | None) -> list[str]:
        """The fine-tuned models ``owner``'s browser may use: its own and those offered to all."""
        return [name for name in list(self.custom) if self.custom_owner.get(name) in (None, owner)]

    def peek(self, key: str, device: str) -> LoadedModel | None:
        """The model ``key`` already loaded on ``device`` (any spelling of its folder), else None."""
        if key in self.custom:
            return self.custom[key]
        if not is_allowed(key):
            return None
        canon = _canonical(key)
        with self._lock:
            found = self._hit((key, device))
            if found is None and canon is not None and canon != key:
                found = self._hit((canon, device))
            return found

    def load(self, key: str, device: str, progress=None) -> LoadedModel:
        """The model ``key`` on ``device``, loaded once for all sessions (a hub model out of reach: the embedded
        model, with a note). In class mode a model outside the list is refused (:func:`not_allowed`)."""
        found = self.peek(key, device)
        if found is not None:
            return found
        if not is_allowed(key):
            raise not_allowed(key)
        canon = canonical_key(key)
        lm = load_with_fallback(canon, device=device, progress=progress, load=self._load_exact)
        if lm.note is not None:  # another model replaced it: later asks share that one, with this note
            with self._lock:
                target = (canonical_key(lm.source.key), device)
                if target in self._loaded:
                    self._aliases[(canon, device)] = (target, lm)
        return lm

    def _load_exact(self, key: str, device: str, progress=None) -> LoadedModel:
        """Load exactly ``key`` (no fallback), or give the copy already loaded; then apply the budget."""
        entry = (canonical_key(key), device)
        with self._lock:
            key_lock = self._key_locks.setdefault(entry, threading.Lock())
        with key_lock:  # two sessions asking for the same model: one loads it, the other waits and shares it
            with self._lock:
                found = self._loaded.get(entry)
                if found is not None:
                    self._loaded.move_to_end(entry)
                    return found
            try:
                lm = registry.load_model(entry[0], device=device, progress=progress)
            except BaseException:
                with self._lock:  # a refused folder or an unreachable hub model leaves no lock behind
                    self._key_locks.pop(entry, None)
                raise
            with self._lock:
                self._loaded[entry] = lm
                self._evict(keep=entry)
        give_back_memory()  # the load's scratch and any model dropped for it
        return lm

    # ------------------------------------------------------------ budget
    def _used(self) -> int:
        """Bytes of the loaded models and of the fine-tuned ones (a model held twice is counted once)."""
        models = {id(lm.model): _bytes(lm) for lm in self._loaded.values()}
        for lm in list(self.custom.values()):
            models.setdefault(id(getattr(lm, "model", lm)), _bytes(lm))
        return sum(models.values())

    def _evict(self, keep: Entry | None) -> int:
        """Drop the least recently used models until the budget holds (never ``keep``). Under the lock."""
        budget, dropped = settings.models_max_bytes(), 0
        while self._used() > budget:
            victim = next((e for e in self._loaded if e != keep), None)
            if victim is None:
                break
            del self._loaded[victim]
            self._key_locks.pop(victim, None)
            for alias in [a for a, (target, _) in self._aliases.items() if target == victim]:
                del self._aliases[alias]
            dropped += 1
        return dropped

    def loaded(self) -> list[Entry]:
        """The entries held, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def used_bytes(self) -> int:
        with self._lock:
            return self._used()

    def register(self, name: str, lm: LoadedModel, owner: str | None = None) -> None:
        """Offer a fine-tuned model to every page of ``owner``'s browser (all browsers' when None). It counts in the
        budget, so loaded models may be dropped to make room; beyond MAX_CUSTOM the oldest fine-tuned one goes."""
        self.custom.pop(name, None)
        self.custom[name] = lm
        self.custom_owner[name] = owner
        while len(self.custom) > MAX_CUSTOM:
            oldest = next(iter(self.custom))
            self.custom.pop(oldest)
            self.custom_owner.pop(oldest, None)
        with self._lock:
            dropped = self._evict(keep=None)
        if dropped:
            give_back_memory()


@st.cache_resource(show_spinner=False)
def store() -> ModelStore:
    return ModelStore()


@st.cache_resource(show_spinner=False)
def preload(key: str, device: str = "cpu") -> threading.Thread:
    """Once per server process (and per model): load ``key`` in a background thread, so that the first visitor
    finds it loaded and warmed up. A failure is left for the sidebar to say when a page asks for the model."""
    models = store()  # taken here, in the script's thread: the worker never touches Streamlit

    def run() -> None:
        try:
            models.load(key, device)
        except Exception:  # noqa: BLE001 - said by the sidebar, in the visitor's language, when asked for
            pass

    worker = threading.Thread(target=run, name=f"preload {key}", daemon=True)
    worker.start()
    return worker


def preload_default() -> threading.Thread:
    """Start loading the model the app opens with (in class mode, the first of the list)."""
    return preload(default_model(DEFAULT_LANG), "cpu")


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
    """key -> short name of the built-in models that need the hub while it cannot be reached (in class mode,
    among the class's models only)."""
    listed = class_models()
    hub = {s.key: s for s in list_sources() if s.kind == "hub" and s.family != "hf-seq2seq"
           and (listed is None or s.key in listed)}
    return {k: label_of(hub[k]).split(" — ")[0] for k in _unavailable(tuple(hub))}


def model_choices() -> dict[str, str]:
    """key -> label of the models that can load now: embedded first, then hub sources, fine-tuned models, tests.

    Hub models out of reach offline are left out (:func:`unavailable_models` names them). In class mode only the
    class's models, in its order (all of them when none can load now: each then says why it fell back)."""
    # seq2seq models (BARThez) are for the tokenizer lab; the model pages need a causal LM
    missing = unavailable_models()
    sources = {s.key: s for s in list_sources()}
    listed = class_models()
    if listed is None:
        choices = {k: label_of(s) for k, s in sources.items() if s.family != "hf-seq2seq" and k not in missing}
    else:
        causal = [k for k in listed if k not in sources or sources[k].family != "hf-seq2seq"]
        offered = [k for k in causal if k not in missing] or causal
        choices = {k: label_of(sources[k]) if k in sources else k for k in offered}
    for name in store().mine(owner()):
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
    if key in store().custom and key not in store().mine(owner()):  # another browser's model: never by its name
        st.session_state[MODEL_KEY] = fallback
        return fallback
    if class_models() is not None and (key == "local" or not (key in store().custom or is_allowed(key))):
        st.session_state[MODEL_KEY] = fallback  # class mode: no local folder, nothing outside the list
        return fallback
    if key == "local":
        folder = local_folder(st.session_state.get(LOCAL_KEY))
        refused = st.session_state.get(LOCAL_FAILED_KEY)
        return fallback if not folder or (refused and refused[0] == folder) else folder
    missing = unavailable_models()
    if key in missing and key != fallback:
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
    bar = st.progress(0.0, text=t("sidebar.loading", name=plain(key)))

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
