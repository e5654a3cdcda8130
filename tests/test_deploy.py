"""Deployment: the Space's front matter, the Dockerfile's promises, and the prefetch command (with fake
downloaders: the hub cannot be reached here)."""
from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from gpt_core import hub, prefetch as P
from gpt_core.data import HFSlice

ROOT = Path(__file__).resolve().parents[1]
SPACE_COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def _cli():
    spec = importlib.util.spec_from_file_location("prefetch_cli", ROOT / "scripts" / "prefetch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or (not buf and not line.strip()):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        word, _, rest = (buf + line).strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        buf = ""
    return out


# ------------------------------------------------------------------------------------ README front matter
def test_readme_starts_with_the_space_front_matter():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    block, rest = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(block)
    assert meta["sdk"] == "docker" and meta["app_port"] == 7860
    assert meta["title"] == "LLM Explorer" and meta["pinned"] is False and meta["license"] == "apache-2.0"
    assert {meta["colorFrom"], meta["colorTo"]} <= SPACE_COLOURS
    assert len(meta["short_description"]) <= 60          # the Hub's limit
    assert rest.lstrip().startswith("# LLM Explorer")


def test_readme_deploy_section_comes_before_the_licence():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    deploy, licence = text.index("\n## Deploy for a class"), text.index("\n## Licence")
    section = text[deploy:licence]
    for needed in ("scripts/prefetch.py --dry-run", "STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION", "LLM_EXPLORER_MODELS",
                   "LLM_EXPLORER_TEACHER_PASSWORD", "scripts/docker_steps.sh", "--build-arg PREFETCH=all"):
        assert needed in section, needed


# ------------------------------------------------------------------------------------ Dockerfile
def test_dockerfile_builds_and_runs_as_uid_1000_on_port_7860():
    steps = _dockerfile()
    words = [w for w, _ in steps]
    useradd = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and a.startswith("useradd"))
    assert shlex.split(steps[useradd][1]) == ["useradd", "-m", "-u", "1000", "user"]
    user = words.index("USER")
    assert steps[user][1] == "user" and user == useradd + 1
    # everything after the apt step and useradd runs as that user: no other USER switches back to root
    assert words.count("USER") == 1 and user < words.index("COPY")
    assert ("EXPOSE", "7860") in steps
    cmd = json.loads(dict(steps)["CMD"])
    assert cmd[1:] == ["run", "explorer/Home.py", "--server.port", "7860", "--server.address", "0.0.0.0"]
    assert cmd[0] == "/home/user/venv/bin/streamlit"
    health = dict(steps)["HEALTHCHECK"]
    assert "http://127.0.0.1:7860/_stcore/health" in health


def test_dockerfile_turns_xsrf_off_and_keeps_cors(monkeypatch):
    envs = " ".join(a for w, a in _dockerfile() if w == "ENV")
    assert "STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=false" in envs
    assert "ENABLE_CORS" not in envs and "enableCORS" not in (ROOT / ".streamlit" / "config.toml").read_text()
    # the variable is the one `streamlit run` reads (click's envvar for --server.enableXsrfProtection)
    from streamlit.web import cli

    monkeypatch.setenv("STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION", "false")
    params = cli.main_run.make_context("run", ["explorer/Home.py"]).params
    assert params["server_enableXsrfProtection"] is False
    assert params["server_enableCORS"] is None          # left to its default: on


def test_dockerfile_bakes_the_embedded_models_with_the_prefetch_command():
    steps = _dockerfile()
    assert ("ARG", "PREFETCH=embedded") in steps
    bake = next(a for w, a in steps if w == "RUN" and "prefetch.py" in a)
    assert bake.startswith('$HOME/venv/bin/python scripts/prefetch.py --only "$PREFETCH"')
    setup = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "setup.sh install" in a)
    assert setup < steps.index(("RUN", bake))             # baked once the packs are installed
    chosen = P.select(P.catalogue(), ["embedded"])
    assert [i.key for i in chosen] == ["smollm2-embedded", "gemma3-embedded"]
    assert not any(i.needs_hub for i in chosen)           # the default build needs no hub


def test_dockerignore_keeps_the_venv_and_secrets_out():
    lines = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".streamlit/secrets.toml", "**/__pycache__"} <= lines


def test_docker_steps_plan_follows_the_dockerfile():
    done = subprocess.run(["bash", str(ROOT / "scripts" / "docker_steps.sh"), "--plan"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    step = {ln.split()[0]: lines[i + 1] for i, ln in enumerate(lines[:-1]) if not ln.startswith(" ")}
    assert "skipped (apt-get would change this machine" in lines[lines.index(next(
        ln for ln in lines if ln.startswith("RUN         apt-get"))) + 1]
    assert "user is uid 1000" in "\n".join(lines)
    assert "uid 1000" in step["USER"]
    assert re.search(r"-> \d+ files of the git context \(less \.dockerignore\) -> \S+/rootfs/home/user/app, owned "
                     r"by user \(uid 1000\)", step["COPY"])
    assert step["ARG"].strip() == "-> PREFETCH=embedded"
    assert re.fullmatch(r"CMD then +\S+/rootfs/home/user/venv/bin/streamlit run explorer/Home.py --server.port 7860 "
                        r"--server.address 0.0.0.0", lines[-1])
    assert not Path("/tmp/llmx-docker-XXXXXX").exists()   # a plan creates nothing


# ------------------------------------------------------------------------------------ prefetch: fakes
GPT2_LISTING = ["config.json", "generation_config.json", "model.safetensors", "pytorch_model.bin",
                "tf_model.h5", "flax_model.msgpack", "64-8bits.tflite", "onnx/decoder_model.onnx",
                "onnx/config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                "README.md", ".gitattributes"]


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty app and Hugging Face caches for the test."""
    from huggingface_hub import constants

    monkeypatch.setenv("LLM_EXPLORER_CACHE", str(tmp_path / "app-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    hub.forget_hub_probe()
    yield tmp_path
    hub.forget_hub_probe()


def _tiny_gpt2(folder: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=64)).save_pretrained(folder)


class FakeHub:
    """list_repo_files + snapshot_download writing a real cache layout (refs/main, snapshots/<rev>)."""

    def __init__(self, listings: dict[str, list[str]]):
        self.listings, self.asked = listings, {}

    def list_repo_files(self, repo):
        return list(self.listings[repo])

    def snapshot_download(self, repo, allow_patterns=None, local_files_only=False):
        from huggingface_hub import constants

        base = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
        rev = "0" * 40
        folder = base / "snapshots" / rev
        if local_files_only:
            if not folder.is_dir():
                raise FileNotFoundError(repo)
            return str(folder)
        self.asked[repo] = sorted(allow_patterns)
        folder.mkdir(parents=True, exist_ok=True)
        (base / "refs").mkdir(exist_ok=True)
        (base / "refs" / "main").write_text(rev)
        if "model.safetensors" in allow_patterns and repo == "openai-community/gpt2":
            _tiny_gpt2(folder)
        for name in allow_patterns:
            if not (folder / name).exists():
                (folder / name).write_text("{}" if name.endswith(".json") else "x")
        return str(folder)


def _use(monkeypatch, fake: FakeHub, reachable: bool = True):
    monkeypatch.setattr(P, "_hub_api", lambda: (fake.list_repo_files, fake.snapshot_download))
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: reachable)


# ------------------------------------------------------------------------------------ prefetch
def test_dry_run_lists_every_item_and_downloads_nothing(caches, monkeypatch, capsys):
    def refuse(*a, **k):
        raise AssertionError("a dry run touched the network")

    monkeypatch.setattr(P, "_hub_api", refuse)
    monkeypatch.setattr(hub, "hub_reachable", refuse)
    assert _cli().main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would fetch 11 items (dry run: nothing is downloaded):" in out
    for key in ("smollm2-embedded", "gemma3-embedded", "gpt2", "distilgpt2", "gpt2-medium", "barthez",
                "bart-tokenizer", "dataset:wikipedia-fr", "dataset:piaf", "dataset:allocine", "bertviz-js"):
        assert re.search(rf"^  {re.escape(key)} +\S", out, re.M), key
    assert re.search(r"^  dataset:fquad +.*\[skipped: FQuAD is handed out by Illuin on request", out, re.M)
    assert f"app cache (LLM_EXPLORER_CACHE): {caches / 'app-cache'}" in out
    assert not (caches / "hf-cache").exists()


def test_unknown_item_is_refused_with_the_choices(capsys):
    assert _cli().main(["--only", "gpt3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prefetch: Unknown item 'gpt3'. Choose among: all, embedded, models, tokenizers, datasets, js,")
    assert "dataset:piaf" in err and "bertviz-js" in err


def test_select_takes_keys_groups_and_bare_dataset_names():
    items = P.catalogue(rows=10)
    assert [i.key for i in P.select(items, ["piaf", "gpt2-medium"])] == ["gpt2-medium", "dataset:piaf"]
    assert [i.key for i in P.select(items, ["models"])] == ["gpt2", "distilgpt2", "gpt2-medium", "barthez"]
    assert len(P.select(items, ["all"])) == len(items) == 11
    with pytest.raises(Exception, match="Rows per dataset"):
        P.catalogue(rows=0)


def test_only_the_files_the_app_reads_are_downloaded(monkeypatch):
    fake = FakeHub({"openai-community/gpt2": GPT2_LISTING,
                    "moussaKam/barthez": ["config.json", "pytorch_model.bin", "sentencepiece.bpe.model",
                                          "tokenizer.json", "tokenizer_config.json", "README.md"],
                    "facebook/bart-base": ["config.json", "model.safetensors", "vocab.json", "merges.txt",
                                           "tokenizer.json", "rust_model.ot"]})
    _use(monkeypatch, fake)
    # safetensors only, never the other formats or the subfolders
    assert P.repo_files("openai-community/gpt2") == ["config.json", "generation_config.json", "merges.txt",
                                                     "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                                                     "vocab.json"]
    # no safetensors in the repository: the pickle, which the app reads with torch.load(weights_only=True)
    assert P.repo_files("moussaKam/barthez") == ["config.json", "pytorch_model.bin", "sentencepiece.bpe.model",
                                                 "tokenizer.json", "tokenizer_config.json"]
    # a tokenizer alone: its files and config.json (which tells AutoTokenizer the class), no weights
    assert P.repo_files("facebook/bart-base", with_weights=False, with_model_config=False) == [
        "config.json", "merges.txt", "tokenizer.json", "vocab.json"]
    fake.listings["x/no-weights"] = ["config.json", "README.md"]
    with pytest.raises(FileNotFoundError, match="x/no-weights has no safetensors or pytorch_model.bin weights"):
        P.repo_files("x/no-weights")


def test_a_prefetched_gpt2_loads_offline_through_the_app_registry(caches, monkeypatch, capsys):
    fake = FakeHub({"openai-community/gpt2": GPT2_LISTING})
    _use(monkeypatch, fake)
    assert _cli().main(["--only", "gpt2"]) == 0
    out = capsys.readouterr().out
    assert "(1/1) gpt2: GPT-2 small (124M): config and safetensors weights (openai-community/gpt2)" in out
    assert re.search(r"^\[ok  \] gpt2 \(\d+ s\): 7 files, [\d.]+ MB, in \S+hf-cache\S+/snapshots/0{40}$", out, re.M)
    assert re.search(r"^1 ready, 0 failed, 0 skipped in \d+ s$", out, re.M)
    assert fake.asked["openai-community/gpt2"] == P.repo_files("openai-community/gpt2")

    # the hub switched off: the app's own loader finds the weights in the cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from gpt_core import registry

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    assert registry.is_available_offline("gpt2")
    loaded = registry.load_model("gpt2")
    cfg = loaded.model.cfg
    assert loaded.source.key == "gpt2" and (cfg.n_layers, cfg.d_model, cfg.context_length) == (1, 16, 64)
    assert loaded.model(torch.tensor([[464, 3797]])).shape == (1, 2, 50257)   # "The cat" in GPT-2 ids

    # and a second prefetch without a hub says it is already there instead of failing
    outcome = P.run(P.select(P.catalogue(), ["gpt2"]))[0]
    assert outcome.status == "ok"
    assert outcome.detail.startswith("already in the cache: ")
    assert outcome.detail.endswith("(the Hugging Face hub is switched off (HF_HUB_OFFLINE=1))")


def test_without_a_hub_hub_items_fail_fast_and_the_others_go_on(caches, monkeypatch, capsys):
    from gpt_core import registry

    fake = FakeHub({})
    _use(monkeypatch, fake, reachable=False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LLM_EXPLORER_OFFLINE"):  # a network that is down
        monkeypatch.delenv(name, raising=False)
    converted = []

    def fake_load(key, *a, **k):
        converted.append(key)
        if key == "gemma3-embedded":
            raise RuntimeError("chunk 3 is damaged")
        return SimpleNamespace(load_seconds=2.0)

    monkeypatch.setattr(registry, "load_model", fake_load)
    assert _cli().main(["--only", "embedded,distilgpt2,allocine"]) == 1
    out = capsys.readouterr().out
    assert converted == ["smollm2-embedded", "gemma3-embedded"]
    assert re.search(r"^\[ok  \] smollm2-embedded \(\d+ s\): converted copy in \S+app-cache/models/"
                     r"smollm2-135m-instruct \(load 2 s\)$", out, re.M)
    assert re.search(r"^\[FAIL\] gemma3-embedded \(\d+ s\): RuntimeError: chunk 3 is damaged$", out, re.M)
    assert re.search(r"^\[FAIL\] distilgpt2 \(\d+ s\): the Hugging Face hub \(https://huggingface.co\) cannot be "
                     r"reached$", out, re.M)
    assert re.search(r"^\[FAIL\] dataset:allocine \(\d+ s\): the Hugging Face hub", out, re.M)
    assert "1 ready, 3 failed, 0 skipped in" in out
    assert fake.asked == {}


def test_dataset_slices_are_kept_and_read_back(caches, monkeypatch):
    from gpt_core import data as D

    rows = [{"review": "Un film superbe.", "label": 1}, {"review": "Ennuyeux à mourir.", "label": 0},
            {"review": "Pas mal.", "label": 1}]
    asked = []

    def fake_slice(name, config=None, split="train", n=200, text_field=None):
        asked.append((name, config, split, n, text_field))
        return HFSlice(name="tblard/allocine", config=None, split="train", text_field="review",
                       records=rows[:n], texts=[r["review"] for r in rows[:n]],
                       source="https://huggingface.co/datasets/tblard/allocine")

    monkeypatch.setattr(D, "load_hf_dataset_slice", fake_slice)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)
    [outcome] = P.run(P.select(P.catalogue(rows=3), ["allocine"]))
    path = caches / "app-cache" / "datasets" / "allocine.json"
    assert outcome.status == "ok" and outcome.detail.startswith("3 rows, ") and outcome.detail.endswith(str(path))
    assert asked == [("tblard/allocine", None, "train", 3, "review")]
    piece = P.read_slice("allocine", 2)
    assert piece == HFSlice(name="tblard/allocine", config=None, split="train", text_field="review",
                            records=rows[:2], texts=["Un film superbe.", "Ennuyeux à mourir."],
                            source="https://huggingface.co/datasets/tblard/allocine")
    assert len(P.read_slice("allocine", 40).records) == 3     # fewer were fetched: what there is
    assert P.read_slice("piaf", 2) is None                    # never fetched
    assert P.read_slice("../etc", 2) is None                  # not a preset
    path.write_text("{not json", encoding="utf-8")
    assert P.read_slice("allocine", 2) is None


def test_bertviz_js_failure_says_why(monkeypatch, tmp_path):
    cli = _cli()
    import explorer.figures.bertviz_html as B

    script = tmp_path / "vendor_js.sh"
    script.write_text("echo 'vendor_js.sh: npm is not installed' >&2; exit 1\n")
    monkeypatch.setattr(cli, "VENDOR_SCRIPT", script)
    monkeypatch.setattr(B, "vendor_available", lambda vendor_dir=None: False)
    [outcome] = P.run([i for i in cli.items(5) if i.key == "bertviz-js"])
    assert outcome.status == "failed"
    assert outcome.detail == "RuntimeError: vendor_js.sh: npm is not installed"


def test_the_app_reads_a_prefetched_slice_with_no_hub(caches, monkeypatch):
    """After `scripts/prefetch.py --only allocine`, the app's dataset loader answers offline from the kept rows."""
    from gpt_core import data as D

    rows = [{"review": "Un film superbe.", "label": 1}, {"review": "Ennuyeux à mourir.", "label": 0}]
    P.save_slice("allocine", HFSlice(name="tblard/allocine", config=None, split="train", text_field="review",
                                     records=rows, texts=[r["review"] for r in rows],
                                     source="https://huggingface.co/datasets/tblard/allocine"))
    monkeypatch.setattr(D, "_hub_is_reachable", lambda: False)
    piece = D.load_hf_dataset_slice("allocine", n=2)
    assert piece.texts == ["Un film superbe.", "Ennuyeux à mourir."] and piece.records == rows
    with pytest.raises(D.HubUnavailable):  # never fetched: the hub is still needed, and said so
        D.load_hf_dataset_slice("piaf", n=2)
