"""Nothing lost: runs killed, interrupted or failing mid-write resume exactly; artifacts survive.

The kill tests drive the real CLI in subprocesses: a reference run goes straight through; the
others are stopped after their first checkpoint (SIGKILL, SIGINT, SIGTERM) and started again
with the same command, and must end with the same bits in every weight and optimizer slot.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_clean_error, cli, tiny_sections, write_config, write_corpus

from lmtrain.checkpoints import CheckpointStore
from lmtrain.keras import softmax
from lmtrain.use.load import load_run

# Every test here prepares, fits or runs a benchmark.
pytestmark = pytest.mark.slow

TRAIN = {"batch_size": 8, "seq_len": 16, "epochs": 3, "max_steps": None, "checkpoint_every": 10, "log_every": 10}
MODEL = {"embedding_dim": 32, "hidden_dim": 128, "dropout": 0.2}  # dropout: its random state must resume too


def lmtrain(*args: object, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmtrain", *map(str, args)], capture_output=True, text=True,
                          timeout=300, **kwargs)


def start(*args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lmtrain", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"finished before {path} appeared: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def stored_state(run_dir: Path) -> dict[str, np.ndarray]:
    """Every model weight, optimizer slot and dropout generator state of the latest checkpoint."""
    latest = CheckpointStore(run_dir / "checkpoints", keep=1).latest()
    return {name: tf.train.load_variable(latest, name) for name, _ in tf.train.list_variables(latest)
            if name.startswith(("model/", "optimizer/", "rng/"))}


def final_perplexity(stdout: str) -> str:
    return re.search(r"^trained .*valid perplexity ([\d.]+)", stdout, re.M).group(1)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Prepared data and an uninterrupted reference run, shared by the kill tests."""
    root = tmp_path_factory.mktemp("faults")
    corpus = write_corpus(root / "corpus", docs=6, lines=300)

    def config(name: str, **changes) -> Path:
        sections = tiny_sections(root / name, corpus, data={"dir": str(root / "data")}, model=MODEL,
                                 train={**TRAIN, **changes})
        (root / name).mkdir(exist_ok=True)
        return write_config(root / name / "c.yaml", sections)

    reference = config("reference")
    assert lmtrain("prepare", reference, "-q").returncode == 0
    out = lmtrain("fit", reference, "-q")
    assert out.returncode == 0, out.stderr
    return {"config": config, "root": root, "state": stored_state(root / "reference" / "run"),
            "perplexity": final_perplexity(out.stdout), "stdout": out.stdout}


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stopped_run_resumes_to_the_same_bits(shared, sig, code):
    name = signal.Signals(sig).name
    cfg = shared["config"](name)
    run_dir = shared["root"] / name / "run"
    proc = start("fit", cfg, "-q")
    wait_for(run_dir / "checkpoints" / "latest", proc)  # the first checkpoint (step 10) is written
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    if sig != signal.SIGKILL:
        # the step in flight is finished and saved: say where, and how to go on
        match = re.search(rf"interrupted: stopped by {name} after step (\d+); checkpoint (\S+); "
                          rf"run the same command", err)
        assert match, err
        stopped_at = int(match.group(1))
        assert match.group(2) == CheckpointStore(run_dir / "checkpoints", keep=1).latest()
        assert match.group(2).endswith(f"step-{stopped_at:08d}/ckpt")
    resumed = lmtrain("fit", cfg, "-q")
    assert resumed.returncode == 0, resumed.stderr
    step = int(re.search(r"resuming from \S+ \(step (\d+)\)", resumed.stderr).group(1))
    assert 10 <= step < 96, resumed.stderr  # it really was stopped part-way
    assert final_perplexity(resumed.stdout) == shared["perplexity"]
    state = stored_state(run_dir)
    assert state.keys() == shared["state"].keys()
    for key, value in shared["state"].items():
        assert np.array_equal(state[key], value), key  # bit for bit


def _in_process_config(tmp_path, corpus, **train):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus, train={"checkpoint_every": 5, **train}))



def test_kill_between_checkpoint_write_and_commit_keeps_the_previous_one(tmp_path, corpus, monkeypatch):
    cfg = _in_process_config(tmp_path, corpus)
    assert cli("prepare", cfg, "-q").exit_code == 0
    commit = CheckpointStore._commit
    calls = []

    def dies_on_second_commit(self, tmp, final):
        calls.append(final.name)
        if len(calls) == 2:  # step 10: written in full, not yet renamed into place
            raise SystemExit("killed")  # a kill: nothing after this point runs
        commit(self, tmp, final)

    monkeypatch.setattr(CheckpointStore, "_commit", dies_on_second_commit)
    with pytest.raises(SystemExit):
        from lmtrain.config.files import load_config
        from lmtrain.fit.loop import fit
        fit(load_config(cfg), progress=False, echo=lambda _: None)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / ".tmp-step-00000010").is_dir()  # the unfinished save is still there
    assert load_run(tmp_path / "run").step == 5  # and the previous checkpoint loads

    monkeypatch.setattr(CheckpointStore, "_commit", commit)
    resumed = cli("fit", cfg, "-q")
    assert resumed.exit_code == 0, resumed.output
    assert "step-00000005" in resumed.output and "step 12" in resumed.output
    assert not list(checkpoints.glob(".tmp-*"))  # leftovers cleaned by the next save
    assert load_run(tmp_path / "run").step == 12


def test_disk_full_during_checkpoint_keeps_the_previous_one(tmp_path, corpus, monkeypatch):
    cfg = _in_process_config(tmp_path, corpus)
    assert cli("prepare", cfg, "-q").exit_code == 0
    write = tf.train.Checkpoint.write
    calls = []

    def fills_the_disk(self, prefix, options=None):
        calls.append(prefix)
        if len(calls) == 2:
            Path(prefix).parent.mkdir(parents=True, exist_ok=True)
            Path(prefix + ".data-00000-of-00001").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(self, prefix, options)

    monkeypatch.setattr(tf.train.Checkpoint, "write", fills_the_disk)
    r = cli("fit", cfg, "-q")
    assert_clean_error(r, 1, "checkpoint of step 10", "disk full", "step-00000005/ckpt) is intact")
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "step-00000005"
    assert not list(checkpoints.glob(".tmp-*"))  # the partial write is gone
    assert load_run(tmp_path / "run").step == 5


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_non_finite_loss(tmp_path, corpus, monkeypatch, mode):
    # The 8th loss computed is NaN: as if a batch or a step had gone wrong there.
    original = softmax.sampled_nll  # what the training step computes its loss with
    calls = tf.Variable(0)

    def poisoned(hidden, rows):
        calls.assign_add(1)
        nll = original(hidden, rows)
        return tf.where(tf.equal(calls, 8), tf.fill(tf.shape(nll), float("nan")), nll)

    monkeypatch.setattr(softmax, "sampled_nll", poisoned)
    cfg = _in_process_config(tmp_path, corpus, on_nan=mode)
    assert cli("prepare", cfg, "-q").exit_code == 0
    r = cli("fit", cfg, "-q")
    checkpoints = tmp_path / "run" / "checkpoints"
    if mode == "stop":
        assert_clean_error(r, 1, "non-finite training loss at step 8", "update was not applied", "train.on_nan=skip")
        latest = CheckpointStore(checkpoints, keep=1).latest()
        assert latest.endswith("step-00000005/ckpt") and f"({latest}) is kept as it was" in r.output
    else:
        assert r.exit_code == 0, r.output
        assert "step 8: non-finite loss, batch skipped (1 so far)" in r.output
        assert "step 12" in r.output and "1 batch(es) skipped for a non-finite loss" in r.output
        assert load_run(tmp_path / "run").step == 12
    for name, value in stored_state(tmp_path / "run").items():
        assert np.all(np.isfinite(value)), name  # no checkpoint ever holds NaN weights


def test_update_that_overflows_the_weights_is_never_saved(tmp_path, corpus):
    # Adam moves each weight by about the learning rate: at 3e38 the first update overflows
    # float32 although the loss and the gradients were finite.
    cfg = _in_process_config(tmp_path, corpus, learning_rate=3e38, checkpoint_every=1, schedule="constant")
    assert cli("prepare", cfg, "-q").exit_code == 0
    r = cli("fit", cfg, "-q")
    assert_clean_error(r, 1, "weights are not finite at step 1", "not saved", "no checkpoint had been written yet")
    assert CheckpointStore(tmp_path / "run" / "checkpoints", keep=1).latest() is None


def test_non_utf8_and_binary_corpus_files(tmp_path, corpus):
    (corpus / "latin1.txt").write_bytes("the king said caf\xe9 and na\xefve\n".encode("latin-1") * 3)
    (corpus / "ok.txt").write_text("the fffd \ufffd is kept as text\n")
    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus))
    r = cli("prepare", cfg, "-q")
    assert r.exit_code == 0, r.output
    assert f"warning: {corpus / 'latin1.txt'}: 6 character(s) not valid UTF-8" in r.output
    assert "ok.txt" not in r.output  # a real U+FFFD is not a replacement
    import json
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["replaced_characters"] == {str(corpus / "latin1.txt"): 6}

    before = {p.name: p.read_bytes() for p in (tmp_path / "data").iterdir()}
    (corpus / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    r = cli("prepare", cfg, "-q", "--force", "--set", "tokenizer.vocab_size=30")
    assert_clean_error(r, 2, str(corpus / "image.txt"), "is not text: NUL bytes")
    assert {p.name: p.read_bytes() for p in (tmp_path / "data").iterdir()} == before  # untouched


def test_damaged_shards_are_named(tmp_path, corpus):
    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus))
    assert cli("prepare", cfg, "-q").exit_code == 0
    assert cli("fit", cfg, "-q").exit_code == 0
    data = tmp_path / "data"
    valid = data / "valid-00000.tfrecord"
    raw = bytearray(valid.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    valid.write_bytes(bytes(raw))
    assert_clean_error(cli("eval", cfg, "--split", "valid"), 1, str(valid), "corrupted", "prepare --force")

    train = data / "train-00000.tfrecord"
    train.write_bytes(train.read_bytes()[:-10])
    run_before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    result = cli("fit", cfg, "-q", "--set", "train.max_steps=20")
    assert_clean_error(result, 1, str(train), "truncated", "prepare --force")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == run_before


def test_killed_prepare_is_never_taken_for_data_and_is_redone(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", docs=30, lines=3000)  # a few seconds of work
    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus))
    data = tmp_path / "data"
    proc = start("prepare", cfg, "-q")
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".data.tmp-*/tokenizer.model")):  # tokenizer done, encoding under way
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert not data.exists() and list(tmp_path.glob(".data.tmp-*"))
    r = lmtrain("fit", cfg, "-q")
    assert r.returncode == 1 and "no prepared data" in r.stderr and "Traceback" not in r.stderr

    r = lmtrain("prepare", cfg, "-q")
    assert r.returncode == 0, r.stderr
    assert "left by an unfinished prepare" in r.stderr
    assert (data / ".complete").is_file() and not list(tmp_path.glob(".data.tmp-*"))


@pytest.mark.parametrize("limit, lines", [(4096, 60), (256 * 1024, 3000)])
def test_prepare_that_runs_out_of_space_keeps_the_old_data(tmp_path, limit, lines):
    """A real write failure: the process may not grow a file past `limit` bytes. At 4 KiB the
    tokenizer model (SentencePiece) cannot be written; at 256 KiB it can (240 KB) but the
    first TFRecord shard cannot."""
    corpus = write_corpus(tmp_path / "corpus", docs=10, lines=lines)
    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus))
    assert lmtrain("prepare", cfg, "-q", "--set", "data.test_fraction=0.5").returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "data").iterdir()}

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = lmtrain("prepare", cfg, "-q", "--force", preexec_fn=small_files)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert re.search(r"^error: prepare could not write \S+: disk full .*; \S+ is unchanged$", r.stderr, re.M), r.stderr
    assert ("tfrecord" in r.stderr) == (limit > 4096)
    assert {p.name: p.read_bytes() for p in (tmp_path / "data").iterdir()} == before
    assert not list(tmp_path.glob(".data.tmp-*"))


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_run_dir_of_another_config_and_checkpoint_of_another_shape(tmp_path, corpus):
    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus))
    assert cli("prepare", cfg, "-q").exit_code == 0
    assert cli("fit", cfg, "-q").exit_code == 0
    run_dir = tmp_path / "run"
    before = _snapshot(run_dir / "checkpoints")

    r = cli("fit", cfg, "-q", "--set", "model.hidden_dim=20")
    assert_clean_error(r, 1, "train.run_dir", str(run_dir), "different model config", "--force")
    assert _snapshot(run_dir / "checkpoints") == before

    # a run directory whose config no longer matches its checkpoint (edited, or files mixed up)
    import yaml
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    saved["model"]["hidden_dim"] = 20
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    for verb in ("eval", "generate"):
        r = cli(verb, cfg)
        # (a tiny run is short, so untied: the output matrix is the first weight whose shape differs)
        assert_clean_error(r, 1, "weight lstm_lm/softmax_w has shape [34, 24]", "gives [34, 20]")
    assert _snapshot(run_dir / "checkpoints") == before

    forced = cli("fit", cfg, "-q", "--force", "--set", "model.hidden_dim=20")
    assert forced.exit_code == 0, forced.output

    # --force starts over even when checkpoints lie there without a config.yaml (a run directory
    # removed while its training was still writing a checkpoint): nothing of them is resumed.
    (run_dir / "config.yaml").unlink()
    again = cli("fit", cfg, "-q", "--force", "--set", "model.hidden_dim=20")
    assert again.exit_code == 0, again.output
    assert "resuming" not in again.output and "already trained" not in again.output


def test_yaml_with_python_tags_is_refused(tmp_path):
    cfg = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    cfg.write_text(f"train: !!python/object/apply:os.system ['touch {marker}']\n")
    for verb in ("prepare", "fit", "eval", "generate"):
        assert_clean_error(cli(verb, cfg), 2, str(cfg), "not valid YAML")
    assert not marker.exists()


def test_signal_during_validation_stops_it_within_a_batch(tmp_path, corpus, monkeypatch):
    """SIGTERM while fit validates: the validation ends after the batch in flight (not the
    whole split), is not recorded, and the step is checkpointed as after any signal."""
    import lmtrain.fit.loop as train_module

    real = train_module.split_nll
    calls = []

    def signalled_on_second(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 2:  # the validation of step 10: SIGTERM arrives as it starts
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "split_nll", signalled_on_second)
    # Zero-state windows: a call scores one batch of 4 windows (with the state carried, one call
    # would read this tiny split whole).
    cfg = _in_process_config(tmp_path, corpus, eval_every=5, eval_windows=True)
    assert cli("prepare", cfg, "-q").exit_code == 0
    r = cli("fit", cfg, "-q")
    assert r.exit_code == 143, r.output
    whole = int(re.search(r"step 5: valid perplexity [\d.]+ \(full softmax, (\d+) tokens, windows of 8",
                          r.output).group(1))
    scored = int(re.search(r"step 10: validation stopped by SIGTERM after (\d+) tokens, not recorded",
                           r.output).group(1))
    assert scored == 4 * 8 < whole  # one batch of 4 windows of 8
    assert "interrupted: stopped by SIGTERM after step 10" in r.output and "Traceback" not in r.output
    assert load_run(tmp_path / "run").step == 10
    assert "step 10: valid perplexity" not in r.output


def test_eval_tokens_caps_every_validation_at_the_same_batches(tmp_path, corpus):
    assert cli("prepare", _in_process_config(tmp_path, corpus), "-q").exit_code == 0
    full = cli("fit", _in_process_config(tmp_path, corpus, eval_every=6), "-q", "--force")
    assert full.exit_code == 0, full.output
    capped = cli("fit", _in_process_config(tmp_path, corpus, eval_every=6, eval_tokens=40), "-q", "--force")
    assert capped.exit_code == 0, capped.output
    pattern = r"step (\d+): valid perplexity ([\d.]+) \(full softmax, (\d+) tokens, state carried"
    whole, cut = re.findall(pattern, full.output), re.findall(pattern, capped.output)
    assert [s for s, _, _ in cut] == ["6", "12"]
    assert {int(n) for _, _, n in cut} == {40}  # the split's first 40 predictions, the state carried
    assert all(int(n) > 40 for _, _, n in whole)
    assert cut[0][1] != whole[0][1]  # the first 40 tokens only, not the split
    bad = cli("fit", _in_process_config(tmp_path, corpus, eval_tokens=0), "-q")
    assert_clean_error(bad, 2, "train.eval_tokens", "must be >= 1, got 0")


def test_a_run_dir_from_before_a_new_config_key_still_resumes(tmp_path, corpus):
    import yaml

    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus))
    assert cli("prepare", cfg, "-q").exit_code == 0
    assert cli("fit", cfg, "-q").exit_code == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    del saved["data"]["text_field"]  # as a version without the key wrote it
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    r = cli("fit", cfg, "-q", "--set", "train.max_steps=14")
    assert r.exit_code == 0, r.output
    assert "step 14" in r.output


def test_training_data_that_ends_early_is_one_error_line(tmp_path, corpus, monkeypatch):
    """A restored data position from another version of the input pipeline can end the data
    before the run's last step: one error line, no traceback, the checkpoints kept."""
    import lmtrain.fit.loop as train_module

    real = train_module.train_dataset
    monkeypatch.setattr(train_module, "train_dataset", lambda *a, **k: real(*a, **k).take(7))
    cfg = _in_process_config(tmp_path, corpus)
    assert cli("prepare", cfg, "-q").exit_code == 0
    r = cli("fit", cfg, "-q")
    assert_clean_error(r, 1, "the training data ran out at step 7 of 12", "--force")
    assert load_run(tmp_path / "run").step == 5  # the checkpoint before it is kept


def test_a_second_fit_on_a_run_directory_exits_at_once_and_the_first_ends_as_if_alone(shared):
    cfg = shared["config"]("twice")
    run_dir = shared["root"] / "twice" / "run"
    proc = start("fit", cfg, "-q")
    wait_for(run_dir / ".lock", proc)
    while not (run_dir / ".lock").read_text():  # the holder names itself once it holds the lock
        time.sleep(0.01)
    before = sorted(p.name for p in run_dir.rglob("*"))
    started = time.monotonic()
    second = cli("fit", cfg, "-q")
    assert time.monotonic() - started < 10
    assert_clean_error(second, 2, f"train.run_dir: {run_dir} is in use by another writer (lmtrain fit, pid {proc.pid}")
    assert proc.poll() is None  # the first still runs, untouched
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert final_perplexity(out) == shared["perplexity"]
    state = stored_state(run_dir)
    for key, value in shared["state"].items():
        assert np.array_equal(state[key], value), key  # bit for bit, as the undisturbed reference
    assert set(before) <= {p.name for p in run_dir.rglob("*")} | {"latest"}  # the second removed nothing


def test_a_second_prepare_into_a_data_directory_exits_at_once_and_writes_nothing(tmp_path, corpus):
    from lmtrain.lock import data_dir_lock

    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus))
    data_dir = tmp_path / "data"
    with data_dir_lock(data_dir, print):  # another prepare, holding it
        started = time.monotonic()
        second = lmtrain("prepare", cfg, "-q")
        assert time.monotonic() - started < 10
    assert second.returncode == 2, second.stderr
    lines = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"data.dir: {data_dir} is in use by another writer (lmtrain prepare, pid " in lines[0]
    assert not data_dir.exists() and "Traceback" not in second.stderr
    assert lmtrain("prepare", cfg, "-q").returncode == 0  # the lock dies with its holder


def _flip(prefix: str, at: int = 64) -> None:
    """Flip bytes of a checkpoint's first model weight, as a bad disk would."""
    from lmtrain.bundle import stored_tensors

    weight = next(t for name, t in stored_tensors(prefix).items() if name.startswith("model/"))
    data = bytearray(weight.path.read_bytes())
    for i in range(at, at + 64):
        data[weight.offset + i % weight.size] ^= 0x5A
    weight.path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_passed_over_by_readers_and_set_aside_by_fit(tmp_path, corpus):
    straight = _in_process_config(tmp_path / "straight", corpus, max_steps=20)
    assert cli("prepare", straight, "-q").exit_code == 0
    assert cli("fit", straight, "-q").exit_code == 0
    damaged = _in_process_config(tmp_path / "damaged", corpus, max_steps=12)
    assert cli("prepare", damaged, "-q").exit_code == 0
    assert cli("fit", damaged, "-q").exit_code == 0
    checkpoints = tmp_path / "damaged" / "run" / "checkpoints"
    latest = CheckpointStore(checkpoints, keep=1).latest()
    assert latest.endswith("step-00000012/ckpt")
    _flip(latest)
    # A reader passes it over for the checkpoint before it, and renames nothing.
    r = cli("eval", damaged, "-q", "--split", "valid")
    assert r.exit_code == 0, r.output
    assert f"warning: checkpoint {latest[:-len('/ckpt')]}" in r.output and "is damaged (its checksum does not match)" \
        in r.output and "@ step 10:" in r.output
    assert Path(latest).parent.is_dir()
    # fit sets it aside (kept, renamed), says so in one line, and ends where an undisturbed run ends.
    resumed = cli("fit", _in_process_config(tmp_path / "damaged", corpus, max_steps=20), "-q")
    assert resumed.exit_code == 0, resumed.output
    lines = [line for line in resumed.output.splitlines() if line.startswith("warning: checkpoint")]
    assert len(lines) == 1 and lines[0].startswith(f"warning: checkpoint {latest} is damaged (model/")
    assert lines[0].endswith(f"set aside as {checkpoints / 'damaged-step-00000012'}; resuming from step 10")
    assert (checkpoints / "damaged-step-00000012" / "ckpt.index").is_file()
    assert "E0000" not in resumed.output and "Traceback" not in resumed.output
    a, b = load_run(tmp_path / "straight" / "run"), load_run(tmp_path / "damaged" / "run")
    for va, vb in zip(a.model.weights, b.model.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)


def test_a_damaged_best_checkpoint_is_passed_over_for_the_latest(tmp_path, corpus):
    cfg = _in_process_config(tmp_path, corpus, max_steps=12, patience=5, eval_every=4)
    assert cli("prepare", cfg, "-q").exit_code == 0
    assert cli("fit", cfg, "-q").exit_code == 0
    best = CheckpointStore(tmp_path / "run" / "checkpoints" / "best", keep=1).latest()
    _flip(best)
    import warnings

    from lmtrain.errors import CheckpointWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = load_run(tmp_path / "run")
    assert [w.category for w in caught if "is damaged" in str(w.message)] == [CheckpointWarning]
    assert run.step == 12  # the latest, past the damaged best


def test_readers_never_fail_while_fit_writes_and_prunes(tmp_path, corpus):
    cfg = _in_process_config(tmp_path, corpus, max_steps=100_000, epochs=1000, checkpoint_every=1,
                             keep_checkpoints=2, log_every=1000)
    assert cli("prepare", cfg, "-q").exit_code == 0
    proc = start("fit", cfg, "-q")
    checkpoints = tmp_path / "run" / "checkpoints"
    wait_for(checkpoints / "latest", proc)
    try:
        steps = [load_run(tmp_path / "run").step for _ in range(50)]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert len(set(steps)) > 5  # the checkpoints really moved on under the readers
