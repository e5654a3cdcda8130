"""The shared model store: one copy of each model, a memory budget, weights read at load, class mode."""
from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest

from gpt_core import registry
from gpt_core.config import GPTConfig
from gpt_core.errors import InvalidInput
from gpt_core.model import GPT, save_checkpoint

from explorer.ui import model_store as MS
from explorer.ui.messages import render

HOME = "../explorer/Home.py"


@pytest.fixture
def calls(monkeypatch):
    """The keys registry.load_model is really asked to load (the real loader still runs)."""
    seen: list[str] = []
    real = registry.load_model

    def spy(key, device="cpu", progress=None):
        seen.append(key)
        return real(key, device, progress)

    monkeypatch.setattr(registry, "load_model", spy)
    return seen


@pytest.fixture
def no_class_mode(monkeypatch):
    monkeypatch.delenv("LLM_EXPLORER_MODELS", raising=False)
    monkeypatch.delenv("LLM_EXPLORER_MODELS_MAX_GB", raising=False)


def _checkpoint(folder, seed: int):
    """A tiny gpt_core checkpoint (random weights under ``seed``) saved in ``folder``."""
    torch.manual_seed(seed)
    save_checkpoint(GPT(GPTConfig.preset("tiny")).eval(), folder)
    return folder


# ------------------------------------------------------------ one copy of each model
def test_three_spellings_of_a_folder_are_one_model(tmp_path, calls, no_class_mode):
    folder = _checkpoint(tmp_path / "x", 0)
    (tmp_path / "link").symlink_to(folder)
    models = MS.ModelStore()
    first = models.load(str(folder), "cpu")
    again = [models.load(spelling, "cpu") for spelling in
             (f"{folder}/", f"/{folder}/./", str(tmp_path / "link"), f"{tmp_path}/y/../x")]
    assert all(lm is first for lm in again)
    assert models.loaded() == [(str(folder), "cpu")]
    assert calls == [str(folder)]                      # loaded once, under its real path
    assert models.peek(f"/{folder}/./", "cpu") is first


def test_offline_gpt2_entries_share_one_copy_of_the_embedded_model(offline, calls, no_class_mode):
    models = MS.ModelStore()
    small = models.load("gpt2", "cpu")
    distil = models.load("distilgpt2", "cpu")
    embedded = models.load(registry.DEFAULT_MODEL, "cpu")
    assert small.model is distil.model is embedded.model
    assert small.tokenizer is distil.tokenizer is embedded.tokenizer
    # each keeps its own sentence; the embedded model chosen directly has none
    assert small.note.params["key"] == "gpt2" and distil.note.params["key"] == "distilgpt2"
    assert embedded.note is None
    assert models.loaded() == [(registry.DEFAULT_MODEL, "cpu")]
    assert calls == ["gpt2", registry.DEFAULT_MODEL, "distilgpt2"]  # the embedded model is read once
    assert models.load("gpt2", "cpu") is small and calls[-1] == "distilgpt2"  # no new attempt at the hub
    assert models.used_bytes() == embedded.memory_bytes


# ------------------------------------------------------------ the memory budget
def test_least_recently_used_models_leave_first_under_the_budget(tmp_path, monkeypatch, calls, no_class_mode):
    a, b, c = (str(_checkpoint(tmp_path / name, seed)) for seed, name in enumerate("abc"))
    models = MS.ModelStore()
    size = models.load(a, "cpu").memory_bytes
    model = GPT(GPTConfig.preset("tiny"))
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert size == sum(p.numel() * 4 for p in model.parameters()) + buffers  # float32 weights and the buffers
    monkeypatch.setenv("LLM_EXPLORER_MODELS_MAX_GB", str(2.5 * size / 1e9))  # room for two
    models.load(b, "cpu")
    assert models.loaded() == [(a, "cpu"), (b, "cpu")]
    models.load(c, "cpu")
    assert models.loaded() == [(b, "cpu"), (c, "cpu")]   # a, the least recently used, left
    assert models.peek(b, "cpu") is not None              # b used again: c is now the oldest
    models.load(a, "cpu")
    assert models.loaded() == [(b, "cpu"), (a, "cpu")]
    assert models.used_bytes() == 2 * size
    assert calls == [a, b, c, a]                           # a was read again after it left

    # a model fine-tuned here counts: the oldest loaded one makes room
    trained = registry.load_model(c)
    models.register("trained here", trained)
    assert models.loaded() == [(a, "cpu")] and models.used_bytes() == 2 * size
    assert models.peek("trained here", "cpu") is trained


def test_the_model_just_loaded_stays_even_alone_over_the_budget(tmp_path, monkeypatch, no_class_mode):
    a, b = (str(_checkpoint(tmp_path / name, seed)) for seed, name in enumerate("ab"))
    monkeypatch.setenv("LLM_EXPLORER_MODELS_MAX_GB", "0.000001")  # 1 kB: less than any model
    models = MS.ModelStore()
    first = models.load(a, "cpu")
    assert models.loaded() == [(a, "cpu")]
    second = models.load(b, "cpu")
    assert models.loaded() == [(b, "cpu")]
    assert models.peek(a, "cpu") is None and first.model is not second.model


# ------------------------------------------------------------ weights read at load
def test_warm_up_reads_every_weight_and_runs_one_tiny_forward():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny")).eval()
    seen = []
    handle = model.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    try:
        read = registry.warm_up(model)
    finally:
        handle.remove()
    memory, _ = registry._memory_and_params(model)
    assert read == memory                              # every parameter and buffer, shared ones once
    assert seen == [(1, registry.WARM_TOKENS)]
    assert not torch.is_inference_mode_enabled() and all(p.grad is None for p in model.parameters())


def test_warm_up_runs_a_transformers_model_too():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=16)).eval()
    seen = []
    model.transformer.register_forward_hook(lambda mod, args, kwargs, out: seen.append(1), with_kwargs=True)
    assert registry.warm_up(model) == registry._memory_and_params(model)[0]
    assert seen == [1]


def test_a_loaded_model_was_warmed_up(tmp_path, no_class_mode):
    lm = MS.ModelStore().load(str(_checkpoint(tmp_path / "w", 0)), "cpu")
    assert lm.warm_seconds > 0 and lm.load_seconds >= lm.warm_seconds


# ------------------------------------------------------------ class mode
def _label_fr(key: str) -> str:
    """A built-in model's name in the French sidebar."""
    from explorer.ui.i18n import lookup

    return lookup(f"model.{key}", "fr") or render(registry._BY_KEY[key].label_message, "fr")


def test_class_mode_refuses_other_models_with_a_sentence(monkeypatch, tmp_path):
    folder = _checkpoint(tmp_path / "class", 0)
    monkeypatch.setenv("LLM_EXPLORER_MODELS", f"{folder}/, tiny-random")
    models = MS.ModelStore()
    assert models.load(str(folder), "cpu").source.key == str(folder)  # another spelling of a listed folder
    with pytest.raises(InvalidInput) as err:
        models.load("gpt2", "cpu")
    assert render(err.value, "fr") == (f"Ce serveur est en mode classe : le modèle « gpt2 » ne fait pas partie des "
                                       f"modèles choisis pour la classe ({folder}/, tiny-random).")
    assert render(err.value, "en") == (f"This server is in class mode: the model 'gpt2' is not one of the models "
                                       f"chosen for the class ({folder}/, tiny-random).")
    assert MS.default_model("fr") == MS.default_model("en") == f"{folder}/"  # the first one listed
    monkeypatch.delenv("LLM_EXPLORER_MODELS")
    models.load("tiny-random", "cpu")
    monkeypatch.setenv("LLM_EXPLORER_MODELS", str(folder))
    assert models.peek("tiny-random", "cpu") is not None  # the Fine-tune page's random start stays allowed
    other = str(_checkpoint(tmp_path / "other", 1))
    monkeypatch.delenv("LLM_EXPLORER_MODELS")
    models.load(other, "cpu")
    monkeypatch.setenv("LLM_EXPLORER_MODELS", str(folder))
    assert models.peek(other, "cpu") is None              # loaded before class mode: still not offered


def test_class_mode_sidebar_offers_only_the_listed_models_and_ignores_a_link_to_another(monkeypatch, calls):
    monkeypatch.setenv("LLM_EXPLORER_MODELS", "tiny-random,gemma3-embedded")
    at = AppTest.from_file(HOME, default_timeout=180)
    at.query_params["model"] = "smollm2-embedded"
    at.run()
    assert not at.exception, at.exception
    picker = at.sidebar.selectbox(key="_w.app.model")
    assert picker.options == [_label_fr(k) for k in ("tiny-random", "gemma3-embedded")]
    assert picker.value == "tiny-random" and at.session_state["app.model"] == "tiny-random"
    assert not [t for t in at.sidebar.text_input if t.key == "_w.app.local_dir"]
    assert "Mode classe : seuls les modèles choisis par l'enseignant sont proposés." in [c.value for c in
                                                                                         at.sidebar.caption]
    assert "L'adresse (URL) donne à «\u00a0Modèle\u00a0» une valeur qui ne convient pas : elle est ignorée." in [
        w.value for w in at.warning]
    assert registry.DEFAULT_MODEL not in calls and "gemma3-embedded" not in calls
    assert dict((m.label, m.value) for m in at.metric)["Couches"] == "2"  # the tiny model is the one shown


def test_the_default_model_is_preloaded_once_in_the_background(monkeypatch):
    monkeypatch.setenv("LLM_EXPLORER_MODELS", "tiny-random")
    worker = MS.preload_default()
    worker.join(timeout=120)
    assert not worker.is_alive() and worker.name == "preload tiny-random"
    lm = MS.store().peek("tiny-random", "cpu")
    assert lm is not None and lm.warm_seconds > 0       # loaded and warmed up before anyone asked
    assert MS.preload_default() is worker               # once per process: no second thread


def test_a_fine_tuned_model_is_offered_to_its_browser_only(monkeypatch, no_class_mode):
    """A student's trained model joins their own sidebar; another browser neither sees it nor opens it by name."""
    alice, bob, name = "a" * 32, "b" * 32, "alice-run 10:00:00"
    tiny = MS.store().load("tiny-random", "cpu")
    MS.store().register(name, tiny, owner=alice)
    try:
        def sidebar(owner: str, link: str | None = None) -> AppTest:
            at = AppTest.from_file(HOME, default_timeout=180)
            at.session_state["app.owner"] = owner
            if link:
                at.query_params["model"] = link
            at.run()
            assert not at.exception, at.exception
            return at

        mine = sidebar(alice).sidebar.selectbox(key="_w.app.model")
        assert any(name in option for option in mine.options)
        theirs = sidebar(bob, link=name)
        assert not any(name in option for option in theirs.sidebar.selectbox(key="_w.app.model").options)
        assert theirs.session_state["app.model"] != name
        assert MS.store().mine(bob) == [k for k in MS.store().mine(None) if MS.store().custom_owner[k] is None]
    finally:
        MS.store().custom.pop(name, None)
        MS.store().custom_owner.pop(name, None)
