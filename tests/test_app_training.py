"""AppTest of the Pretrain and Fine-tune pages: render, hostile input, a real job, cancel, queue."""
from __future__ import annotations

import json
import threading
import time

import pytest
from streamlit.testing.v1 import AppTest

from explorer.jobs import get_manager
from explorer.ui.messages import plain
from test_app_data import HOSTILE_UPLOADS, expect_said, speak

PRETRAIN = "../pages/9_Pretrain.py"
FINETUNE = "../pages/10_Finetune.py"
HOME = "../explorer/Home.py"


def texts(at, kinds=("success", "info", "warning", "error")) -> str:
    return " ".join(str(e.value) for kind in kinds for e in at.get(kind))


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def app(page: str, model: str | None = "tiny-random", lang: str | None = None, owner: str | None = None) -> AppTest:
    at = AppTest.from_file(page, default_timeout=180)
    if owner:  # the browser's kept identity (its cookie); else each session is a new browser
        at.session_state["app.owner"] = owner
    if model:
        at.session_state["app.model"] = model
    if lang:
        at.session_state["app.lang"] = lang
    at.run()
    assert not at.exception, at.exception
    return at


def wait_snapshot(job_id: str, predicate, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    snap = get_manager().snapshot(job_id)
    while not predicate(snap) and time.monotonic() < deadline:
        time.sleep(0.2)
        snap = get_manager().snapshot(job_id)
    return snap


@pytest.fixture(autouse=True)
def no_job_left_running():
    yield
    manager = get_manager()
    for snap in manager.jobs():
        if snap.active:
            manager.cancel(snap.job_id)
            manager.wait(snap.job_id, timeout=60)


def nano(at: AppTest, steps: int, batch: int = 4) -> AppTest:
    at.selectbox(key="_w.pretrain.preset").set_value("nano").run()
    at.number_input(key="_w.pretrain.steps").set_value(steps).run()
    at.number_input(key="_w.pretrain.batch").set_value(batch).run()
    at.number_input(key="_w.pretrain.warmup").set_value(0).run()
    assert not at.exception, at.exception
    return at


# ------------------------------------------------------------------- pretrain
def test_pretrain_renders_with_the_default_model_and_estimates():
    at = app(PRETRAIN, model=None)  # the embedded SmolLM2 in the sidebar; this page starts from scratch
    m = metrics(at)
    assert m["Poids entraînés"] == "207 k"  # tiny preset: 2 blocks, d_model 64, a 1,600-token BPE of the corpus
    assert m["Tokens vus"] == "256 k"       # 250 steps x 16 rows x 64 tokens
    assert not at.button(key="pretrain.start").disabled
    captions = " ".join(c.value for c in at.caption)
    assert "Tokenizer : BPE français appris ici \\(1\u202f600\\)." in captions  # (Markdown-escaped)
    assert "151 fenêtres d'entraînement et 17 de validation" in captions
    assert "L'estimation repose sur des vitesses mesurées à l'instant sur ce modèle" in captions


def test_pretrain_in_english_with_a_preset():
    at = nano(app(PRETRAIN), steps=100)
    at.session_state["app.lang"] = "en"  # (AppTest formats options in French, so switch after choosing)
    at.run()
    assert [at.select_slider(key=f"_w.pretrain.{k}").value for k in ("n_heads", "d_model", "context")] == [2, 32, 32]
    assert at.slider(key="_w.pretrain.n_layers").value == 1
    m = metrics(at)
    assert m["Trained weights"] == "65 k" and m["Tokens seen"] == "12.8 k"  # 100 steps x 4 rows x 32 tokens
    assert at.button(key="pretrain.start").label == "Start training"


@pytest.mark.parametrize("lr, message", [
    ("nan", "doit être un nombre fini"), ("0", "strictement positif"), ("10", "ferait diverger"),
])
def test_pretrain_refuses_bad_learning_rates(lr, message):
    at = app(PRETRAIN)
    at.text_input(key="_w.pretrain.lr").input(lr).run()
    assert not at.exception, at.exception
    assert message in texts(at, ("error",))
    assert at.button(key="pretrain.start").disabled


def test_a_diverging_pretraining_stops_with_an_error_message():
    at = nano(app(PRETRAIN), steps=50)
    at.text_input(key="_w.pretrain.lr").input("1").run()
    at.number_input(key="_w.pretrain.warmup").set_value(0).run()
    at.button(key="pretrain.start").click().run()
    snap = wait_snapshot(at.session_state["pretrain.job"], lambda s: s.finished)
    assert snap.status == "diverged" and snap.step < 50
    at.run()
    assert not at.exception, at.exception
    errors = texts(at, ("error",))
    assert "L'entraînement a divergé et a été arrêté" in errors and "taux d'apprentissage plus petit" in errors
    assert "Avant / après" not in [h.value for h in at.subheader]


def test_pretrain_refuses_a_short_text_and_a_run_that_cannot_fit():
    at = app(PRETRAIN)
    at.selectbox(key="_w.pretrain.source").set_value("paste").run()
    at.text_area(key="_w.pretrain.text").input("Trop court.").run()
    assert "11 caractères\\) est trop court pour en apprendre un tokenizer" in texts(at, ("error",))
    assert at.button(key="pretrain.start").disabled
    at.radio(key="_w.pretrain.tokenizer").set_value("gpt2").run()
    assert "trop court pour un contexte de 64 tokens" in texts(at, ("error",))
    assert at.button(key="pretrain.start").disabled
    at.selectbox(key="_w.pretrain.source").set_value("pydoc").run()
    at.slider(key="_w.pretrain.n_layers").set_value(12).run()
    at.select_slider(key="_w.pretrain.d_model").set_value(768).run()
    at.select_slider(key="_w.pretrain.n_heads").set_value(12).run()
    at.select_slider(key="_w.pretrain.context").set_value(1024).run()
    at.number_input(key="_w.pretrain.batch").set_value(512).run()
    assert not at.exception, at.exception
    assert "Impossible de lancer l'entraînement. Cet entraînement demande environ" in texts(at, ("error",))
    assert at.button(key="pretrain.start").disabled


def test_pretrain_job_runs_and_the_model_reaches_other_pages():
    at = nano(app(PRETRAIN), steps=6)
    at.button(key="pretrain.start").click().run()
    assert not at.exception, at.exception
    job_id = at.session_state["pretrain.job"]
    snap = wait_snapshot(job_id, lambda s: s.finished)
    assert snap.status == "done", snap.message
    assert snap.train_steps == [1, 2, 3, 4, 5, 6] and snap.val_steps[0] == 0
    at.run()
    assert not at.exception, at.exception
    assert "Terminé : 6 étapes" in texts(at, ("success",))
    name = snap.result["model_name"]
    assert f"« {plain(name)} »" in texts(at, ("info",))
    curve = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert curve["data"][0]["x"] == [1, 2, 3, 4, 5, 6]
    assert [b.proto.label for b in at.get("download_button")] == [
        "Télécharger le checkpoint (zip : safetensors + config.json)", "Télécharger les métriques (JSON)"]
    # every page of this browser now offers it: Home loads it from the shared store
    home = AppTest.from_file(HOME, default_timeout=180)
    home.session_state["app.owner"] = at.session_state["app.owner"]
    home.session_state["app.model"] = name
    home.run()
    assert not home.exception, home.exception
    assert metrics(home)["Couches"] == "1"
    # another browser asking for it by name gets the default model instead
    other = AppTest.from_file(HOME, default_timeout=180)
    other.session_state["app.model"] = name
    other.run()
    assert not other.exception, other.exception
    assert other.session_state["app.model"] != name and metrics(other)["Couches"] != "1"


def test_pretrain_cancel_from_the_page():
    at = nano(app(PRETRAIN), steps=5000)
    at.button(key="pretrain.start").click().run()
    job_id = at.session_state["pretrain.job"]
    snap = wait_snapshot(job_id, lambda s: s.step >= 1, timeout=120)
    assert snap.status == "running"
    # a reload is a new session of the same browser (its cookie): it re-attaches to the running job and can
    # cancel it; another browser sees nothing of it
    stranger = app(PRETRAIN)
    assert not [b for b in stranger.button if b.key == f"cancel.{job_id}"]
    reloaded = app(PRETRAIN, owner=at.session_state["app.owner"])
    assert reloaded.session_state["pretrain.job"] == job_id
    assert any(p.proto.text.startswith("Étape ") for p in reloaded.get("progress"))
    reloaded.button(key=f"cancel.{job_id}").click().run()
    assert not reloaded.exception, reloaded.exception
    snap = wait_snapshot(job_id, lambda s: s.finished, timeout=60)
    assert snap.status == "cancelled" and snap.step < 5000
    at.run()
    assert f"Entraînement annulé à l'étape {snap.step}." in texts(at, ("warning",))


def test_a_second_request_waits_in_the_queue():
    manager = get_manager()
    release = threading.Event()

    def blocker(cancel):
        while not cancel.is_set() and not release.is_set():
            yield {"type": "status", "message": "occupé"}
            time.sleep(0.05)

    first = manager.submit("finetune", blocker, {"steps": 10})
    wait_snapshot(first, lambda s: s.status == "running", timeout=10)
    at = nano(app(PRETRAIN), steps=6)
    assert "Un entraînement est déjà en cours sur ce serveur (fine-tuning" in texts(at, ("info",))
    at.button(key="pretrain.start").click().run()
    assert "En file d'attente : position 1" in texts(at, ("info",))
    second = at.session_state["pretrain.job"]
    assert manager.snapshot(second).status == "queued"
    release.set()
    assert wait_snapshot(second, lambda s: s.finished).status == "done"


# ------------------------------------------------------------------- finetune
def test_finetune_renders_with_the_default_model_and_suggests_lora():
    at = app(FINETUNE, model=None)
    assert at.radio(key="_w.finetune.large.instruct.method").value == "lora"
    m = metrics(at)
    assert m["Poids entraînés"] == "369 k"  # Gemma 3 (French default): LoRA rank 8 on q_proj, v_proj of 18 blocks
    assert "gros pour un processeur" in texts(at, ("info",))
    assert not at.button(key="finetune.start").disabled


def test_finetune_instruction_job_shows_before_and_after():
    at = app(FINETUNE)
    at.number_input(key="_w.finetune.small.instruct.steps").set_value(6).run()
    at.button(key="finetune.start").click().run()
    snap = wait_snapshot(at.session_state["finetune.job"], lambda s: s.finished)
    assert snap.status == "done", snap.message
    at.run()
    assert not at.exception, at.exception
    assert "Avant / après" in [h.value for h in at.subheader]
    assert [c.value for c in at.caption].count("Réponse attendue") == 3
    assert "instruct " in snap.result["model_name"]
    bars = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert [t["name"] for t in bars["data"]] == ["Avant", "Après"]


def test_finetune_classification_job_in_english_shows_the_confusion_matrix(monkeypatch):
    at = app(FINETUNE)
    at.radio(key="_w.finetune.task").set_value("classify").run()
    assert "seule une couche linéaire" not in texts(at)  # (the French note is checked in French below)
    at.number_input(key="_w.finetune.small.classify.probe.steps").set_value(20).run()
    at.button(key="finetune.start").click().run()
    snap = wait_snapshot(at.session_state["finetune.job"], lambda s: s.finished)
    assert snap.status == "done", snap.message
    at.session_state["app.lang"] = "en"  # last run: AppTest formats option labels in French
    at.run()
    assert not at.exception, at.exception
    m = metrics(at)
    assert {"Accuracy before", "Accuracy after", "Majority class"} <= set(m)
    heat = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["data"][0]["type"] == "heatmap")
    assert sum(map(sum, heat["data"][0]["z"])) == 60
    assert heat["data"][0]["x"] == ["compte_acces", "impression", "logiciel", "materiel", "reseau"]
    assert "not offered to the other pages" in " ".join(c.value for c in at.caption)
    # a blank ticket typed after the run is refused in English
    speak(monkeypatch, "en")
    at.text_area[0].input("   ")
    next(b for b in at.button if b.label == "Compare").click().run()
    expect_said(at, "en", "The text to classify is empty: type a few words.", ("error",))


# ------------------------------------------------- hostile input, in the UI language
def said_in(lang: str):
    from said import en, fr

    return fr if lang == "fr" else en


def refusal_of(fn, *args, lang: str, **kw) -> str:
    from gpt_core.errors import GPTCoreError

    with pytest.raises(GPTCoreError) as err:
        fn(*args, **kw)
    return said_in(lang)(err.value)


def fake_uploads(monkeypatch) -> dict:
    """The pages' file uploader, fed by the test: {widget key: (bytes, file name)}."""
    from explorer.views import data as V

    files: dict = {}
    monkeypatch.setattr(V, "uploaded", lambda where, label, types, key: files.get(key))
    return files


def no_earlier_jobs(monkeypatch) -> None:
    """A fresh job manager: the panel of an earlier test's run (named in its language) stays out of view."""
    import explorer.jobs as jobs

    monkeypatch.setattr(jobs, "_manager", jobs.JobManager())


def tiny_memory(monkeypatch) -> None:
    """A machine with 1 MB free: no run fits."""
    import gpt_core.train as T

    monkeypatch.setattr(T, "available_memory", lambda device: 1_000_000)


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_pretrain_hostile_input_is_refused_in_the_ui_language(lang, monkeypatch):
    from explorer import corpus as C
    from explorer.ui.i18n import lookup
    from gpt_core.config import GPTConfig
    from gpt_core.train import TrainConfig, parse_learning_rate

    files = fake_uploads(monkeypatch)
    speak(monkeypatch, lang)
    no_earlier_jobs(monkeypatch)
    at = app(PRETRAIN, lang=lang)
    for lr in ("abc", "nan", "0", "10", ""):
        at.text_input(key="_w.pretrain.lr").input(lr).run()
        expect_said(at, lang, refusal_of(parse_learning_rate, lr, lang=lang), ("error",))
        assert at.button(key="pretrain.start").disabled
    at.text_input(key="_w.pretrain.lr").input("3e-3").run()
    at.number_input(key="_w.pretrain.warmup").set_value(500).run()              # warm-up longer than training
    expect_said(at, lang, refusal_of(TrainConfig, steps=250, warmup=500, lang=lang), ("error",))
    at.number_input(key="_w.pretrain.warmup").set_value(5).run()
    at.select_slider(key="_w.pretrain.n_heads").set_value(12).run()             # 64 is not a multiple of 12
    expect_said(at, lang, refusal_of(GPTConfig, d_model=64, n_heads=12, lang=lang), ("error",))
    at.select_slider(key="_w.pretrain.n_heads").set_value(4).run()
    at.text_input(key="_w.pretrain.prompt").input("   ").run()                  # empty sample prompt
    expect_said(at, lang, kinds=("error",))
    at.text_input(key="_w.pretrain.prompt").input("Il").run()
    at.selectbox(key="_w.pretrain.source").set_value("paste").run()
    at.text_area(key="_w.pretrain.text").input("   ").run()                     # blank text
    expect_said(at, lang, lookup("input.blank", lang))
    at.text_area(key="_w.pretrain.text").input("Trop court.").run()             # too short for the context
    expect_said(at, lang, kinds=("error",))
    at.selectbox(key="_w.pretrain.source").set_value("upload").run()
    for data, name in HOSTILE_UPLOADS:
        files["_w.pretrain.file"] = (data, name)
        at.run()
        expect_said(at, lang, refusal_of(C.load_corpus, "upload", upload=(data, name), lang=lang), ("error",))
    assert at.button(key="pretrain.start").disabled
    tiny_memory(monkeypatch)                                                    # a run that cannot fit
    at.selectbox(key="_w.pretrain.source").set_value("corpus_en").run()
    expect_said(at, lang, lookup("training.cannot_start", lang).split("{")[0].strip(), ("error",))
    assert at.button(key="pretrain.start").disabled


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_finetune_hostile_input_is_refused_in_the_ui_language(lang, monkeypatch):
    from explorer import corpus as C
    from explorer.ui.i18n import lookup

    files = fake_uploads(monkeypatch)
    speak(monkeypatch, lang)
    no_earlier_jobs(monkeypatch)
    at = app(FINETUNE, lang=lang)
    P = "finetune.small.instruct"
    at.text_input(key=f"_w.{P}.lr").input("-1").run()
    expect_said(at, lang, kinds=("error",))
    at.text_input(key=f"_w.{P}.lr").input("3e-3").run()
    at.select_slider(key=f"_w.{P}.max_length").set_value(16).run()             # masked prompts fill every row
    expect_said(at, lang, kinds=("error",))
    at.select_slider(key=f"_w.{P}.max_length").set_value(96).run()
    at.radio(key=f"_w.{P}.src").set_value("upload").run()
    uploads = [(b'[{"instruction": "a"', "broken.json"), (b"question,answer\nx,y\n", "cols.csv"),
               (b"caf\xe9", "latin1.csv"), (b"[]", "empty.json")]
    for upload in uploads:
        files[f"_w.{P}.file"] = upload
        at.run()
        expect_said(at, lang, refusal_of(C.instruction_records, upload, lang=lang), ("error",))
    at.radio(key="_w.finetune.task").set_value("classify").run()
    at.radio(key="_w.finetune.small.classify.probe.src").set_value("upload").run()
    one_class = ("text,label\npanne wifi,reseau\ncâble,reseau\n".encode(), "one.csv")
    files["_w.finetune.small.classify.probe.file"] = one_class
    at.run()
    expect_said(at, lang, refusal_of(C.classification_records, one_class, lang=lang), ("error",))
    at.radio(key="_w.finetune.small.classify.probe.src").set_value("bundled").run()
    tiny_memory(monkeypatch)                                                    # a run that cannot fit
    at.run()
    expect_said(at, lang, lookup("training.cannot_start", lang).split("{")[0].strip(), ("error",))
    assert at.button(key="finetune.start").disabled


def test_a_csv_with_a_review_column_works_on_the_pretrain_page(monkeypatch):
    files = fake_uploads(monkeypatch)
    reviews = "\n".join(f'"Critique {i} : un film {"superbe" if i % 2 else "ennuyeux"}, vu au cinéma.",{i % 5}'
                        for i in range(300))
    files["_w.pretrain.file"] = (("review,stars\n" + reviews + "\n").encode(), "avis.csv")
    at = app(PRETRAIN)
    at.selectbox(key="_w.pretrain.preset").set_value("nano").run()
    at.selectbox(key="_w.pretrain.source").set_value("upload").run()
    assert not at.exception, at.exception
    assert not texts(at, ("error",))
    assert "avis\\.csv :" in " ".join(c.value for c in at.caption)
    assert not at.button(key="pretrain.start").disabled


def test_a_markdown_file_name_shows_as_text_on_the_pretrain_page(monkeypatch):
    """A hostile upload's name becomes part of captions and of the trained model's label: never a link."""
    files = fake_uploads(monkeypatch)
    no_earlier_jobs(monkeypatch)
    at = app(PRETRAIN)
    at.selectbox(key="_w.pretrain.source").set_value("upload").run()
    name = "[Connexion requise](https://evil.example) ![x](https://evil.example/x.png).txt"
    files["_w.pretrain.file"] = ((C_TEXT * 40).encode(), name)
    at.run()
    assert not at.exception, at.exception
    shown = " ".join(c.value for c in at.caption)
    assert "\\[Connexion requise\\]\\(https" in shown  # escaped: Markdown shows it as text
    assert "](https://evil.example)" not in shown
    assert "BPE appris ici sur ce corpus" in shown  # the corpus's own tokenizer, named in French


C_TEXT = "Le chat dort sur le tapis du salon. Le chien garde la maison pendant la nuit.\n\n"


def test_a_run_longer_than_the_server_accepts_is_refused_before_the_click(monkeypatch):
    monkeypatch.setenv("LLM_EXPLORER_JOB_MAX_MIN", "0.001")  # every run is too long for this server
    at = app(PRETRAIN)
    assert "ce serveur accepte des runs d'au plus 0 minutes" in texts(at, ("error",))
    assert at.button(key="pretrain.start").disabled

