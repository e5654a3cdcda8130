"""Saves killed at every step leave a loadable checkpoint: the old one or the new one, exactly, never a mix.

The file-system steps of a save (os.replace, os.fsync, os.unlink, shutil.rmtree) are counted; a run is
"killed" at its k-th step for k = 1, 2, ... until one run finishes. From the kill on, every step raises,
so no clean-up handler can tidy up what a real kill would leave. Then the loader (which calls
gpt_core.hub.settle) must read the old or the new version. One test kills a real process with SIGKILL.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from explorer import history as H
from gpt_core import hub
from gpt_core.config import GPTConfig
from gpt_core.model import GPT, load_checkpoint, save_checkpoint
from gpt_core.probe import LinearProbe, load_probe, save_probe
from gpt_core.train import load_trained, save_trained

ROOT = Path(__file__).resolve().parents[1]
STEPS = ((os, "replace"), (os, "fsync"), (os, "unlink"), (os, "remove"), (shutil, "rmtree"))


class Killed(BaseException):
    """The process "dies" here (a BaseException, as a real kill is not caught by ``except Exception``)."""


def killed_at(k: int, action, counted: tuple[str, ...] = ()) -> str | None:
    """Run ``action`` "killed" at its k-th file-system step (counting only the steps named in ``counted``,
    when given): that step and every later one raise. Returns the step's name, or None when ``action``
    finished first."""
    count, where = [0], []

    def wrap(name, real):
        def step(*args, **kwargs):
            if where:
                raise Killed(name)
            if not counted or name in counted:
                count[0] += 1
                if count[0] == k:
                    where.append(name)
                    raise Killed(name)
            return real(*args, **kwargs)
        return step

    with pytest.MonkeyPatch.context() as mp:
        for module, name in STEPS:
            mp.setattr(module, name, wrap(name, getattr(module, name)))
        try:
            action()
        except Killed:
            return where[0]
    return None


def tiny(seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=300, context_length=16, d_model=16, n_heads=2, n_layers=1)).eval()


def which(state: dict, old: dict, new: dict) -> str:
    """'old' or 'new' when ``state`` equals one of them exactly, tensor by tensor."""
    for label, ref in (("old", old), ("new", new)):
        if state.keys() == ref.keys() and all(torch.equal(state[key], ref[key]) for key in ref):
            return label
    raise AssertionError("the loaded weights are neither the old ones nor the new ones")


def run_every_kill(tmp_path: Path, write_old, write_new, read) -> list[str]:
    """For k = 1, 2, ...: a fresh old version, a new save killed at step k, then ``read``: returns what
    each read found ('old'/'new'), the last being the save that finished."""
    seen = []
    for k in itertools.count(1):
        path = tmp_path / f"k{k}" / "entry"
        write_old(path)
        step = killed_at(k, lambda: write_new(path))
        seen.append(read(path))
        assert not hub._sibling(path, "commit").exists() and not (path / hub.FILES_JOURNAL).exists()
        if step is None:
            return seen
        assert read(path) == seen[-1]  # a second read finds the same


def assert_switches_once(seen: list[str]) -> None:
    """Old until the commit point, new from there on: the one step that decides."""
    first_new = seen.index("new")
    assert first_new >= 1 and seen == ["old"] * first_new + ["new"] * (len(seen) - first_new), seen


# ---------------------------------------------------------------- each saver, killed at every step
def test_save_checkpoint_killed_at_every_step_loads_old_or_new(tmp_path):
    old, new = tiny(0), tiny(1)
    ref = {"old": old.state_dict(), "new": new.state_dict()}

    def read(path):
        model = load_checkpoint(path)
        label = which(model.state_dict(), ref["old"], ref["new"])
        step = json.loads((path / "config.json").read_text())["step"]
        assert step == {"old": 1, "new": 2}[label]  # the config goes with its weights
        return label

    seen = run_every_kill(tmp_path, lambda p: save_checkpoint(old, p, {"step": 1}),
                          lambda p: save_checkpoint(new, p, {"step": 2}), read)
    assert_switches_once(seen)
    assert len(seen) >= 8  # 2 file fsyncs, the journal (fsync, rename, folder fsync), 2 renames, its removal...
    # what a killed save left inside the folder is overwritten by the next one
    path = tmp_path / "k2" / "entry"
    save_checkpoint(new, path, {"step": 3})
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]


def test_a_save_killed_between_its_two_renames_keeps_other_files_and_recovers(tmp_path):
    path = tmp_path / "ck"
    save_checkpoint(tiny(0), path, {"step": 1})
    (path / "tokenizer.json").write_text("{}")
    # os.replace calls: the journal, model.safetensors, config.json: killed before the 3rd
    assert killed_at(3, lambda: save_checkpoint(tiny(1), path, {"step": 2}), ("replace",)) == "replace"
    assert json.loads((path / "config.json").read_text())["step"] == 1  # new weights, old config on disk...
    assert which(load_checkpoint(path).state_dict(), tiny(0).state_dict(), tiny(1).state_dict()) == "new"
    assert json.loads((path / "config.json").read_text())["step"] == 2  # ...until the loader finished the save
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_save_trained_killed_at_every_step_loads_old_or_new(tmp_path):
    old, new = tiny(0), tiny(1)
    seen = run_every_kill(tmp_path, lambda p: save_trained(old, p, {"step": 1}),
                          lambda p: save_trained(new, p, {"step": 2}),
                          lambda p: which(load_trained(p).state_dict(), old.state_dict(), new.state_dict()))
    assert_switches_once(seen)
    # the folder swap happens after the files inside the new folder are in place: more steps than above
    assert len(seen) >= 15


def test_save_probe_killed_at_every_step_loads_old_or_new(tmp_path):
    body = tiny(0)
    old, new = LinearProbe(16, 3, seed=1), LinearProbe(16, 3, seed=2)
    assert not torch.equal(old.linear.weight, new.linear.weight)
    seen = run_every_kill(tmp_path, lambda p: save_probe(old, p, {"labels": ["a", "b", "c"]}),
                          lambda p: save_probe(new, p, {"labels": ["x", "y", "z"]}),
                          lambda p: which(load_probe(p, body).probe.state_dict(), old.state_dict(),
                                          new.state_dict()))
    assert_switches_once(seen)


def test_cache_entry_killed_at_every_step_reads_old_or_new(tmp_path):
    versions = {"old": {"a.txt": "v1", "b.txt": "v1"}, "new": {"a.txt": "v2", "c.txt": "v2"}}

    def write(label):
        def save(path):
            with hub.atomic_dir(path) as tmp:
                for name, text in versions[label].items():
                    (tmp / name).write_text(text)
        return save

    def read(path):  # what a cache reader does: settle, then read
        hub.settle(path)
        files = {p.name: p.read_text() for p in path.iterdir()}
        return next(label for label, ref in versions.items() if files == ref)

    seen = run_every_kill(tmp_path, write("old"), write("new"), read)
    assert_switches_once(seen)
    # the kill between the two renames (no folder under the entry's name) is among the cases covered
    path = tmp_path / "between" / "entry"
    write("old")(path)
    assert killed_at(3, lambda: write("new")(path), ("replace",)) == "replace"
    assert not path.exists() and read(path) == "new"


# ---------------------------------------------------------------- a real kill
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize("saver, k, expected", [
    ("save_checkpoint", 3, "new"),  # between the renames of model.safetensors and config.json
    ("save_trained", 6, "new"),     # between "old folder aside" and "new folder in place"
    ("save_trained", 4, "old"),     # just before the folder swap's journal: not committed
])
def test_a_process_killed_with_sigkill_mid_save_leaves_a_loadable_checkpoint(tmp_path, saver, k, expected):
    path = tmp_path / "run"
    old, new = tiny(0), tiny(1)
    (save_checkpoint if saver == "save_checkpoint" else save_trained)(old, path, {"step": 1})
    child = textwrap.dedent(f"""
        import os, signal, torch
        from gpt_core.config import GPTConfig
        from gpt_core.model import GPT, save_checkpoint
        from gpt_core.train import save_trained
        torch.manual_seed(1)
        model = GPT(GPTConfig(vocab_size=300, context_length=16, d_model=16, n_heads=2, n_layers=1)).eval()
        real, calls = os.replace, [0]
        def replace(*args, **kwargs):
            calls[0] += 1
            if calls[0] == {k}:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        os.replace = replace
        {saver}(model, {str(path)!r}, {{"step": 2}})
        print("finished")
    """)
    done = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    if saver == "save_trained" and k == 6:
        assert not path.exists()  # the window the journal covers
    loader = load_checkpoint if saver == "save_checkpoint" else load_trained
    assert which(loader(path).state_dict(), old.state_dict(), new.state_dict()) == expected
    assert json.loads((path / "config.json").read_text())["step"] == {"old": 1, "new": 2}[expected]


# ---------------------------------------------------------------- start-up: recover, then delete leftovers
def test_startup_cleanup_recovers_killed_saves_before_deleting_leftovers(tmp_path):
    store = H.RunStore(tmp_path / H.DB_NAME)
    old, new = tiny(0), tiny(1)
    replace_only = ("replace",)
    folders = {}
    for run_id, save in (("swapped", save_trained), ("early", save_trained), ("files", save_checkpoint),
                         ("uncommitted", save_checkpoint)):
        folders[run_id] = H.checkpoint_dir(run_id, tmp_path)
        save(old, folders[run_id], {"step": 1})
        store.record(H.RunRecord(run_id, "pretrain", "lm", "done", checkpoint=f"{H.CHECKPOINTS}/{run_id}"))
    # killed between the folder swap's two renames: no folder under the run's name
    assert killed_at(6, lambda: save_trained(new, folders["swapped"]), replace_only)
    # killed before anything was committed: a temporary folder beside the old one
    assert killed_at(1, lambda: save_trained(new, folders["early"]), replace_only)
    # killed after the journal, before the renames: inside the folder
    assert killed_at(2, lambda: save_checkpoint(new, folders["files"]), replace_only)
    # killed on the journal's rename: new files not committed, inside the folder
    assert killed_at(1, lambda: save_checkpoint(new, folders["uncommitted"]), replace_only)
    assert sorted(p.name for p in folders["uncommitted"].iterdir()) == [
        ".commit.part", ".config.json.new", ".model.safetensors.new", "config.json", "model.safetensors"]
    base = tmp_path / H.CHECKPOINTS
    before = sorted(p.name for p in base.iterdir())
    assert "swapped" not in before and ".swapped.commit" in before
    temp_early = [n for n in before if n.startswith(".early.tmp-")]
    assert len(temp_early) == 1 and (folders["files"] / hub.FILES_JOURNAL).is_file()

    removed = H.cleanup_incomplete(tmp_path, (), store)

    assert removed == temp_early  # the only leftover folder; the swapped run's new folder was moved in, not deleted
    assert sorted(p.name for p in base.iterdir()) == ["early", "files", "swapped", "uncommitted"]
    for run_id, expected in (("swapped", "new"), ("early", "old"), ("files", "new"), ("uncommitted", "old")):
        assert sorted(p.name for p in folders[run_id].iterdir()) == ["config.json", "model.safetensors"], run_id
        assert which(load_trained(folders[run_id]).state_dict(), old.state_dict(), new.state_dict()) == expected
        assert store.get(run_id).checkpoint == f"{H.CHECKPOINTS}/{run_id}"  # none marked gone
    assert H.cleanup_incomplete(tmp_path, (), store) == []


def test_settle_brings_back_a_folder_the_previous_atomic_dir_left_aside_and_ignores_a_bad_journal(tmp_path):
    # the atomic_dir of earlier versions could be killed with the old folder moved aside and nothing in place
    aside = tmp_path / ".entry.old-123-0123abcd"
    aside.mkdir()
    (aside / "a.txt").write_text("v1")
    hub.settle(tmp_path / "entry")
    assert (tmp_path / "entry" / "a.txt").read_text() == "v1" and not aside.exists()
    # a journal that names no save is not a commit: the new folder beside is not moved in
    beside = tmp_path / ".entry.tmp-123-89abcdef"
    beside.mkdir()
    (beside / "a.txt").write_text("v2")
    (tmp_path / ".entry.commit").write_text("123-89ab")
    hub.settle(tmp_path / "entry")
    assert (tmp_path / "entry" / "a.txt").read_text() == "v1" and not (tmp_path / ".entry.commit").exists()
