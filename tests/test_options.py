"""Model and training options: samplers, weight tying and projection, schedules, early stopping."""

from __future__ import annotations

import re

import pytest
from helpers import cli, tiny_sections, write_config


@pytest.mark.slow
@pytest.mark.parametrize("kind, vocab, warns", [("bpe", 60, True), ("char", 30, False)])
def test_log_uniform_warns_when_ids_are_not_sorted_by_frequency(tmp_path, corpus, kind, vocab, warns):
    cfg = write_config(tmp_path / "c.yaml", tiny_sections(
        tmp_path, corpus, tokenizer={"model_type": kind, "vocab_size": vocab},
        model={"sampler": "log_uniform", "num_sampled": 8}, train={"max_steps": 2}))
    assert cli("prepare", cfg, "-q").exit_code == 0
    r = cli("fit", cfg, "-q")
    assert r.exit_code == 0, r.output
    warning = "warning: model.sampler=log_uniform: assumes ids sorted by decreasing frequency"
    assert (warning in r.output) == warns, r.output


@pytest.mark.slow
def test_uniform_sampler_trains(tmp_path, corpus):
    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus, model={"sampler": "uniform"}))
    assert cli("prepare", cfg, "-q").exit_code == 0
    r = cli("fit", cfg, "-q")
    assert r.exit_code == 0 and "warning" not in r.output, r.output


@pytest.mark.slow
def test_tied_weights_share_one_variable_and_project_when_widths_differ(tmp_path, corpus):
    import numpy as np
    import tensorflow as tf

    import lmtrain
    from lmtrain.checkpoints import CheckpointStore

    cfg = write_config(tmp_path / "c.yaml", tiny_sections(
        tmp_path, corpus, model={"tie_weights": True, "embedding_dim": 16, "hidden_dim": 24}))
    for verb in ("prepare", "fit"):
        r = cli(verb, cfg, "-q")
        assert r.exit_code == 0, r.output
    lm = lmtrain.load(tmp_path / "run")
    model = lm.model
    assert model.softmax_w is model.embedding.embeddings  # one variable, two uses
    paths = [v.path for v in model.weights]
    assert "lstm_lm/softmax_w" not in paths and len(paths) == len(set(paths))
    assert model.projection.kernel.shape == (24, 16)  # LSTM output projected to the embedding width
    latest = CheckpointStore(tmp_path / "run" / "checkpoints", 1).latest()
    stored = {name for name, _ in tf.train.list_variables(latest)}
    assert not any("softmax_w" in name for name in stored)
    assert any("projection" in name for name in stored)
    assert np.isfinite(lm.perplexity("the king\n")) and cli("eval", cfg).exit_code == 0
    assert cli("generate", cfg, "--max-tokens", "5").exit_code == 0
    assert cli("export", cfg, "--out", tmp_path / "export").exit_code == 0


def test_projection_without_tying_and_bad_combination(tmp_path, corpus):
    from lmtrain.build import create_model
    from lmtrain.config.files import config_from_dict
    from lmtrain.config.resolve import resolve
    from lmtrain.errors import ConfigError

    for tie in (False, None):  # null: a projection to another width than the embedding's is not tied
        cfg = config_from_dict(tiny_sections(tmp_path, corpus, model={"projection_dim": 10, "tie_weights": tie}))
        model = create_model(resolve(cfg, 1000), 34, [1] * 34)
        assert model.softmax_w.shape == (34, 10) and model.projection.kernel.shape == (24, 10)
        assert not model.tie_weights
    with pytest.raises(ConfigError, match="model.projection_dim: must equal model.embedding_dim .* set "
                       "model.tie_weights: false \\(or null\\) to project without tying"):
        config_from_dict(tiny_sections(tmp_path, corpus, model={"projection_dim": 10, "tie_weights": True}))


def _validations(output):
    import re

    return [(int(s), float(p)) for s, p in re.findall(r"^step (\d+): valid perplexity ([\d.]+)", output, re.M)]


@pytest.mark.slow
def test_early_stopping_keeps_the_best_checkpoint_and_eval_uses_it(tmp_path, corpus):
    # a 34-word vocabulary and ~800 training tokens at a high learning rate: it overfits soon
    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus, train={
        "learning_rate": 0.05, "eval_every": 4, "patience": 2, "max_steps": 400, "epochs": 400}))
    assert cli("prepare", cfg, "-q").exit_code == 0
    r = cli("fit", cfg, "-q")
    assert r.exit_code == 0, r.output
    seen = _validations(r.output)
    best_step, best = min(seen, key=lambda sp: (sp[1], sp[0]))
    last_step = seen[-1][0]
    assert f"early stop at step {last_step}" in r.output and last_step < 400
    assert [s for s, _ in seen[-2:]] == [last_step - 4, last_step]  # two validations without a better one
    assert all(p >= best for s, p in seen if s > best_step)
    assert f"best valid perplexity {best:.2f} at step {best_step}" in r.output

    ev = cli("eval", cfg, "--split", "valid")  # the best checkpoint, not the last one
    assert ev.exit_code == 0 and f"valid @ step {best_step}: perplexity {best:.2f}" in ev.output, ev.output
    again = cli("fit", cfg, "-q")
    assert again.exit_code == 0 and f"training stopped early at step {last_step}" in again.output
    assert _validations(again.output) == []  # nothing trained


@pytest.mark.slow
def test_plateau_schedule_lowers_the_rate_and_keeps_it_in_the_checkpoint(tmp_path, corpus):
    import re

    import tensorflow as tf

    from lmtrain.checkpoints import CheckpointStore

    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus, train={
        "learning_rate": 0.05, "eval_every": 4, "schedule": "plateau", "plateau_factor": 0.5,
        "max_steps": 120, "epochs": 400}))
    assert cli("prepare", cfg, "-q").exit_code == 0
    r = cli("fit", cfg, "-q")
    assert r.exit_code == 0, r.output
    rates = [float(x) for x in re.findall(r"learning rate lowered to ([\d.e-]+)", r.output)]
    expected = [0.05 * 0.5 ** (i + 1) for i in range(len(rates))]
    assert rates and rates == pytest.approx(expected, rel=5e-3)  # printed to 3 digits
    latest = CheckpointStore(tmp_path / "run" / "checkpoints", 1).latest()
    stored = [v for name, _ in tf.train.list_variables(latest) if "learning_rate" in name
              for v in [tf.train.load_variable(latest, name)]]
    assert stored and float(stored[0]) == pytest.approx(0.05 * 0.5 ** len(rates))


def test_sgd_warms_up_a_steady_rate_and_a_resumed_run_keeps_its_warmup():
    from lmtrain.config.resolve import resolve
    from lmtrain.config.schema import Config, TrainConfig
    from lmtrain.errors import ConfigError

    def resolved(total_steps: int, started: Config | None = None, **train) -> TrainConfig:
        return resolve(Config(train=TrainConfig(**train)), total_steps, started).train

    sgd = {"optimizer": "sgd", "learning_rate": 20.0, "schedule": "plateau"}
    assert resolved(51_753, **sgd).warmup_steps == 100  # PTB medium's 39 epochs
    assert resolved(600, **sgd).warmup_steps == 30  # at most a twentieth of the run
    assert resolved(600, **sgd, warmup_steps=7).warmup_steps == 7  # an explicit key wins
    assert resolved(51_753, **{**sgd, "schedule": "constant"}).warmup_steps == 100
    assert resolved(51_753, learning_rate=0.01, schedule="constant").warmup_steps == 0  # Adam: none
    first = resolve(Config(train=TrainConfig(**sgd)), 600)
    assert resolved(51_753, first, **sgd).warmup_steps == 30  # a resumed run keeps its first choice
    before = Config(train=TrainConfig(**sgd))  # a run directory from before SGD warmed up
    assert resolved(51_753, before, **sgd).warmup_steps is None
    with pytest.raises(ConfigError, match="train.warmup_steps: 50 is not used by train.optimizer=lazy_adam"):
        resolved(1000, schedule="constant", warmup_steps=50)


def test_sgd_warmup_scales_the_first_updates_and_then_the_whole_rate():
    import tensorflow as tf

    from lmtrain.build import SGD

    weight = tf.Variable([0.0, 0.0])
    optimizer = SGD(learning_rate=20.0, warmup_steps=4)
    moves = []
    for _ in range(6):
        before = weight.numpy().copy()
        optimizer.apply([tf.constant([0.25, 0.0])], [weight])
        moves.append(float(before[0] - weight.numpy()[0]))
    # 20 x 0.25 = 5 at the full rate: a quarter of it first, then a half, three quarters, all.
    assert moves == pytest.approx([1.25, 2.5, 3.75, 5.0, 5.0, 5.0])
    assert SGD.from_config(optimizer.get_config()).warmup_steps == 4


@pytest.mark.slow
def test_fit_warms_sgd_up_from_its_first_step_and_says_so(tmp_path, corpus):
    """SGD's first step at a steady rate moves the weights by 1 / warmup_steps of the full step:
    the full step from the first batch (20 x 0.25 = 5 in norm) is what left PTB medium stuck."""
    import numpy as np

    from lmtrain.use.load import load_run

    train = {"optimizer": "sgd", "learning_rate": 20.0, "clip_norm": 0.25, "schedule": "plateau",
             "max_steps": 1, "checkpoint_every": 1}

    def first_step(name: str, **changes) -> list[np.ndarray]:
        cfg = write_config(tmp_path / f"{name}.yaml", tiny_sections(tmp_path, corpus, train={
            **train, "run_dir": str(tmp_path / name), **changes}))
        r = cli("fit", cfg)
        assert r.exit_code == 0, r.output
        if name == "warm":
            assert "20 (plateau schedule from, reached by a linear warm-up over the first 10 steps" in r.output
        return load_run(tmp_path / name).model.get_weights()

    assert cli("prepare", write_config(tmp_path / "p.yaml", tiny_sections(tmp_path, corpus)), "-q").exit_code == 0
    start = first_step("start", learning_rate=1e-30)  # the same initial weights, moved by nothing
    warm = [w - s for w, s in zip(first_step("warm", warmup_steps=10), start)]
    full = [w - s for w, s in zip(first_step("full", warmup_steps=0), start)]
    assert max(float(np.abs(f).max()) for f in full) > 1e-3
    for w, f in zip(warm, full):
        np.testing.assert_allclose(w * 10, f, rtol=1e-3, atol=1e-6)  # float32 differences


@pytest.mark.slow
def test_fit_says_when_a_run_is_no_better_than_the_unigram_model(tmp_path, corpus):
    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus, train={
        "optimizer": "sgd", "learning_rate": 1e-6, "schedule": "constant", "epochs": 2, "max_steps": None}))
    assert cli("prepare", cfg, "-q").exit_code == 0
    r = cli("fit", cfg)
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if "the unigram model's" in line]
    assert len(lines) == 1, r.output  # once, from the first epoch's end
    assert lines[0].startswith("warning: step ") and "(1.0 epochs)" in lines[0] and "stuck" in lines[0]


def test_warmup_cosine_schedule():
    from lmtrain.build import learning_rate
    from lmtrain.config.schema import TrainConfig

    schedule = learning_rate(TrainConfig(learning_rate=0.01, schedule="warmup_cosine", warmup_steps=10,
                                         min_lr_ratio=0.1), total_steps=110)
    values = {step: float(schedule(step)) for step in (0, 5, 10, 60, 110)}
    assert values[0] == pytest.approx(0.0, abs=1e-9) and values[5] == pytest.approx(0.005)
    assert values[10] == pytest.approx(0.01) and values[110] == pytest.approx(0.001)
    assert values[10] > values[60] > values[110]
    assert learning_rate(TrainConfig(learning_rate=0.01, schedule="constant"), 100) == 0.01


def test_default_schedule_warms_up_for_a_twentieth_of_the_run_then_decays():
    from lmtrain.build import learning_rate
    from lmtrain.config.rules import short_run_steps
    from lmtrain.config.schema import TrainConfig

    config = TrainConfig()  # the defaults: schedule and warmup_steps null, the rate from the width
    assert config.schedule is None and config.warmup_steps is None and config.learning_rate is None
    assert config.schedule_for(short_run_steps(512), 512) == "warmup_cosine"
    schedule = learning_rate(config, total_steps=1000, hidden_dim=512)  # peak 0.01 at 512 units
    assert float(schedule(25)) == pytest.approx(0.005) and float(schedule(50)) == pytest.approx(0.01)
    assert float(schedule(1000)) == pytest.approx(0.001)
    assert float(learning_rate(config, total_steps=2000, hidden_dim=512)(100)) == pytest.approx(0.01)  # 5% of 2000
    assert float(learning_rate(config, 1000, hidden_dim=128)(50)) == pytest.approx(0.02)
    # a short run: the same peak, held from the first step to the last
    assert config.schedule_for(short_run_steps(512) - 1, 512) == "constant"
    assert learning_rate(config, total_steps=short_run_steps(512) - 1, hidden_dim=512) == 0.01


def test_a_short_run_trains_untied_at_a_constant_rate_unless_told():
    import dataclasses

    # a wider model is done with the short-run recipe sooner: 650 steps at 512 units
    from lmtrain.config.files import config_from_dict
    from lmtrain.config.resolve import resolve

    # a wider model is done with the short-run recipe sooner: 650 steps at 512 units
    from lmtrain.config.rules import short_run, short_run_steps
    from lmtrain.config.schema import Config

    # a wider model is done with the short-run recipe sooner: 650 steps at 512 units
    assert [short_run_steps(h) for h in (128, 512, 1024)] == [920, 650, 550]
    assert short_run(649, 512) and not short_run(650, 512) and short_run(900, 128)
    default = Config()  # 512 units
    assert default.model.tie_weights is None and default.train.schedule is None
    short, long = resolve(default, 649), resolve(default, 650)
    assert (short.model.tie_weights, short.train.schedule) == (False, "constant")
    assert (long.model.tie_weights, long.train.schedule) == (True, "warmup_cosine")
    assert resolve(long, 10) == long  # made choices are kept (idempotent)
    told = config_from_dict({"model": {"tie_weights": True}, "train": {"schedule": "warmup_stable_decay"}})
    made = resolve(told, 10)
    assert (made.model.tie_weights, made.train.schedule) == (True, "warmup_stable_decay")
    # a projection to another width than the embedding's cannot be tied: null leaves it untied
    projected = dataclasses.replace(default, model=dataclasses.replace(default.model, projection_dim=64))
    assert resolve(projected, 5000).model.tie_weights is False
    # a run that started short keeps its choices when resumed for longer, and the reverse
    assert resolve(default, 5000, started=short) == dataclasses.replace(
        long, model=short.model, train=dataclasses.replace(long.train, schedule="constant", warmup_steps=0))
    assert resolve(default, 10, started=long).model.tie_weights is True


@pytest.mark.slow
def test_fit_says_what_the_run_length_chose_and_a_resumed_run_keeps_it(tmp_path, corpus):
    import yaml

    import lmtrain

    sections = tiny_sections(tmp_path, corpus, train={"max_steps": 6})
    cfg = write_config(tmp_path / "c.yaml", sections)
    assert cli("prepare", cfg, "-q").exit_code == 0
    r = cli("fit", cfg, "--set", "train.precision=auto")
    assert r.exit_code == 0, r.output
    # what auto stood for on this machine, and why
    assert re.search(r"precision: (mixed_bfloat16|float32) \(train.precision=auto: ", r.output), r.output
    assert ("run length: 6 steps, short (short: under 1,400 at model.hidden_dim 24): untied, schedule constant "
            "(model.tie_weights and train.schedule null; a resumed run keeps its first choice)") in r.output
    assert "learning rate: 0.01 (constant; train.learning_rate)" in r.output
    assert re.search(r"[\d,]+ tokens/s \([\d,]+ GFLOP/s of matmuls\)", r.output), r.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["tie_weights"] is False and saved["train"]["schedule"] == "constant"
    assert not lmtrain.load(tmp_path / "run").model.tie_weights

    # A run directory that was started tied (as every run was before the choice existed) goes on
    # tied when the config leaves it open, however short the rest of the run is.
    tied = tiny_sections(tmp_path, corpus, model={"tie_weights": True}, train={
        "run_dir": str(tmp_path / "tied"), "max_steps": 4, "schedule": "warmup_cosine"})
    assert cli("fit", write_config(tmp_path / "t.yaml", tied), "-q").exit_code == 0
    r = cli("fit", write_config(tmp_path / "t2.yaml", tiny_sections(tmp_path, corpus, train={
        "run_dir": str(tmp_path / "tied"), "max_steps": 8})))
    assert r.exit_code == 0, r.output
    assert "resuming from" in r.output
    assert ("run length: 8 steps; tied, schedule warmup_cosine (model.tie_weights and train.schedule null: kept "
            "from the run's start)") in r.output
    assert lmtrain.load(tmp_path / "tied").model.tie_weights


def test_step_flops_count_the_lstm_projection_and_output_matmuls():
    import dataclasses

    import keras

    from lmtrain.build import create_model
    from lmtrain.config.resolve import resolve
    from lmtrain.config.schema import Config
    from lmtrain.fit.flops import step_flops, step_matmuls
    from lmtrain.fit.trainer import create_step

    demo = resolve(Config(), 1000)  # E 256, H 512 projected to 256 and tied, 1,024 negatives at 8k
    full = dataclasses.replace(demo, model=dataclasses.replace(demo.model, softmax="full"))
    models = {cfg.model.softmax: create_step(cfg, create_model(cfg, 8000, [1] * 8000), keras.optimizers.SGD(), 8000,
                                             [1] * 8000) for cfg in (demo, full)}
    lstm, projection, sampled = 2 * 4 * 512 * (256 + 512), 2 * 512 * 256, 2 * 256 * 1024
    # forward and backward (three products of each forward one's size), B 64 x T 35: about
    # 26 GFLOP a step, 21 of them the LSTM's
    assert step_flops(models["auto"], 64 * 35) == 3 * 64 * 35 * (lstm + projection + sampled)
    assert step_flops(models["full"], 1) == 3 * (lstm + projection + 2 * 256 * 8000)
    assert round(step_flops(models["auto"], 64 * 35) / 1e9, 1) == 26.4
    matmuls = step_matmuls(models["auto"], 64, 35)
    assert sum(mm.flops for mm in matmuls if mm.part == "lstm") == 3 * 64 * 35 * lstm
    recurrent = [mm for mm in matmuls if mm.what == "lstm_0 recurrent, forward"][0]
    assert (recurrent.m, recurrent.k, recurrent.n, recurrent.count) == (64, 512, 2048, 35)
    logits = [mm for mm in matmuls if mm.what == "logits, sampled, forward"][0]
    assert (logits.m, logits.k, logits.n) == (64 * 35, 256, 1024)


def test_default_learning_rate_falls_with_the_square_root_of_the_width():
    from lmtrain.config.rules import default_learning_rate
    from lmtrain.config.schema import TrainConfig

    assert [default_learning_rate(h) for h in (64, 128, 512, 1024, 2048)] == [0.02, 0.02, 0.01, 0.0071, 0.005]
    assert TrainConfig(learning_rate=0.003).rate(128) == 0.003  # a given rate is used as it is
    assert TrainConfig().rate(1024) == 0.0071


def test_warmup_stable_decay_holds_the_peak_then_decays_over_the_last_share(tmp_path):
    from lmtrain.build import learning_rate
    from lmtrain.config.schema import TrainConfig
    from lmtrain.keras.optim import WarmupStableDecay

    schedule = learning_rate(TrainConfig(learning_rate=0.01, schedule="warmup_stable_decay"), total_steps=200)
    values = {step: float(schedule(step)) for step in (0, 5, 10, 100, 160, 180, 200)}
    assert values[0] == 0.0 and values[5] == pytest.approx(0.005)  # a 10-step warm-up (5%)
    assert values[10] == values[100] == values[160] == pytest.approx(0.01)  # held until the last 20%
    assert values[180] == pytest.approx(0.0055) and values[200] == pytest.approx(0.001)
    # it saves and loads with a Keras optimizer
    again = WarmupStableDecay.from_config(schedule.get_config())
    assert float(again(180)) == pytest.approx(values[180])
    with pytest.raises(Exception, match="train.decay_share"):
        TrainConfig(decay_share=1.5)


def test_library_warmup_cosine_is_fits_schedule_and_rejects_bad_arguments():
    from lmtrain.build import learning_rate
    from lmtrain.config.schema import TrainConfig
    from lmtrain.keras import warmup_cosine

    ours, fits = warmup_cosine(1e-2, 400), learning_rate(TrainConfig(schedule="warmup_cosine"), 400, hidden_dim=512)
    assert [float(ours(s)) for s in (0, 10, 20, 200, 400)] == [float(fits(s)) for s in (0, 10, 20, 200, 400)]
    bad = [((0.0, 10), "peak must be a learning rate > 0"), ((1e-3, 0), "total_steps must be an integer >= 1"),
           ((1e-3, 10.5), "total_steps must be"), ((1e-3, 10, -1), "warmup_steps must be"),
           ((1e-3, 10, None, 2.0), "min_ratio must be between 0 and 1")]
    for args, fragment in bad:
        with pytest.raises(ValueError, match=fragment):
            warmup_cosine(*args)


@pytest.mark.slow
def test_schedule_spans_the_epochs_when_max_steps_is_null(tmp_path, corpus):
    from lmtrain.build import step_counts
    from lmtrain.config.files import load_config
    from lmtrain.data.meta import load_meta
    from lmtrain.data.prepare import prepare
    from lmtrain.fit.loop import fit
    from lmtrain.rundir import logged_scalars

    path = write_config(tmp_path / "c.yaml", tiny_sections(
        tmp_path, corpus, train={"max_steps": None, "epochs": 2, "log_every": 1, "learning_rate": 0.01,
                                 "schedule": "warmup_cosine"}))
    config = load_config(path)
    prepare(config, progress=False, echo=lambda _: None)
    per_epoch, total = step_counts(config, load_meta(tmp_path / "data" / "meta.json"))
    assert total == 2 * per_epoch > 10
    result = fit(config, progress=False, echo=lambda _: None)
    assert result.step == total
    rates = {step: value for _, step, value in logged_scalars(tmp_path / "run" / "logs", "train/learning_rate")}
    warmup = round(0.05 * total)
    assert rates[total] == pytest.approx(0.001)  # the decay ends at min_lr_ratio x the peak on the last step
    assert max(rates.values()) == pytest.approx(rates[max(warmup, 1)], rel=1e-5)
    assert rates[per_epoch] > rates[total]


@pytest.mark.slow
def test_auto_softmax_is_chosen_by_vocabulary_and_fit_says_why(tmp_path, corpus):
    from lmtrain.rundir import logged_scalars

    data = tiny_sections(tmp_path, corpus)["data"]
    for num_sampled, kind in ((33, "sampled"), (34, "full")):  # 34 ids: sampled needs fewer negatives
        run = tmp_path / f"run-{num_sampled}"
        cfg = write_config(tmp_path / f"c{num_sampled}.yaml", tiny_sections(
            tmp_path, corpus, data=data, model={"softmax": "auto", "num_sampled": num_sampled},
            train={"max_steps": 2, "log_every": 1, "run_dir": str(run)}))
        assert cli("prepare", cfg, "-q").exit_code == 0
        r = cli("fit", cfg, "-q")
        assert r.exit_code == 0, r.output
        why = ("34 ids, 33 distinct negatives a step (model.num_sampled); the full softmax only where"
               if kind == "sampled"
               else "34 distinct negatives a step (model.num_sampled) would not be fewer than the 34 ids, so")
        assert f"softmax: {kind} (model.softmax=auto: {why}" in r.output
        assert f"train {kind} loss " in r.output
        assert [s for _, s, _ in logged_scalars(run / "logs", f"train/{kind}_loss")] == [1, 2]


def test_choose_softmax():
    from lmtrain.build import choose_softmax
    from lmtrain.config.schema import ModelConfig

    assert choose_softmax(ModelConfig(num_sampled=1024), 1024)[0] == "full"  # nothing left to sample
    assert choose_softmax(ModelConfig(num_sampled=1024), 259)[0] == "full"  # bytes
    assert choose_softmax(ModelConfig(num_sampled=1024), 1025)[0] == "sampled"
    assert choose_softmax(ModelConfig(num_sampled=1024), 2000)[0] == "sampled"
    assert choose_softmax(ModelConfig(num_sampled=1024), 8000)[0] == "sampled"  # the demo
    assert choose_softmax(ModelConfig(softmax="sampled", num_sampled=10), 20) == (
        "sampled", "model.softmax=sampled: 10 distinct negatives a step (model.num_sampled)")
    assert choose_softmax(ModelConfig(softmax="full"), 10**6)[0] == "full"
    # num_sampled null (the default): an eighth of the vocabulary within 1,024-2,048 (the unigram bias)
    assert choose_softmax(ModelConfig(), 1024)[0] == "full"
    assert choose_softmax(ModelConfig(), 1025) == ("sampled", (
        "model.softmax=auto: 1,025 ids, 1,024 distinct negatives a step (model.num_sampled null: an eighth of "
        "the ids, 1,024-2,048); the full softmax only where the negatives would not be fewer than the ids"))
    assert choose_softmax(ModelConfig(softmax="sampled"), 25_000)[1] == (
        "model.softmax=sampled: 2,048 distinct negatives a step (model.num_sampled null: an eighth of the ids, "
        "1,024-2,048)")
    assert choose_softmax(ModelConfig(softmax="sampled", output_bias_init="zeros"), 25_000)[1] == (
        "model.softmax=sampled: 3,125 distinct negatives a step (model.num_sampled null: an eighth of the ids, "
        "1,024-4,096)")


def test_default_negatives_grow_with_the_vocabulary():
    from lmtrain.config.schema import ModelConfig

    m = ModelConfig()
    assert m.num_sampled is None and m.output_bias_init == "unigram"
    sizes = (259, 2000, 8000, 8199, 16_384, 25_000, 32_768, 100_000)
    # with the unigram output bias (the default) at most 2,048; with zeros, as the library's head starts, 4,096
    assert [m.negatives(v) for v in sizes] == [1024, 1024, 1024, 1024, 2048, 2048, 2048, 2048]
    zeros = ModelConfig(output_bias_init="zeros")
    assert [zeros.negatives(v) for v in sizes] == [1024, 1024, 1024, 1024, 2048, 3125, 4096, 4096]
    assert ModelConfig(num_sampled=7).negatives(100_000) == 7  # a number given is used as it is


def test_auto_softmax_accepts_more_negatives_than_ids_and_sampled_does_not(tmp_path, corpus):
    from lmtrain.config.files import config_from_dict
    from lmtrain.errors import ConfigError

    config_from_dict(tiny_sections(tmp_path, corpus, model={"softmax": "auto", "num_sampled": 40}))  # full then
    with pytest.raises(ConfigError, match=r"model.num_sampled: 40 must be smaller than the vocabulary \(34 ids in "
                                          r"tokenizer.vocab_size\)"):
        config_from_dict(tiny_sections(tmp_path, corpus, model={"softmax": "sampled", "num_sampled": 40}))
    # the null default stands for 1,024 at a small vocabulary: the error says so
    with pytest.raises(ConfigError, match=r"num_sampled: null, which means 1024 at this vocabulary, must be smaller"):
        config_from_dict(tiny_sections(tmp_path, corpus, model={"softmax": "sampled", "num_sampled": None}))


@pytest.mark.slow
def test_stateful_training_carries_state_and_resets_each_epoch(tmp_path, corpus, monkeypatch):
    import dataclasses

    import numpy as np

    from lmtrain.config.files import load_config
    from lmtrain.fit import loop as train_module

    calls = []
    original = train_module.build_trainer

    def recording(*args, **kwargs):
        trainer = original(*args, **kwargs)
        step_fn = trainer.train_fn

        def step(data):
            logs = step_fn(data)
            calls.append((np.stack([s.numpy() for s in data[3]]), np.stack([s.numpy() for s in logs["state"]])))
            return logs

        return dataclasses.replace(trainer, train_fn=step)

    monkeypatch.setattr(train_module, "build_trainer", recording)
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus, train={
        "stateful": True, "epochs": 3, "max_steps": None, "checkpoint_every": 1000})))
    from lmtrain.data.prepare import prepare

    meta = prepare(cfg, progress=False).meta
    result = train_module.fit(cfg, progress=False, echo=lambda _: None)
    per_epoch = ((meta.splits["train"].tokens - 1) // 4) // 8
    assert result.step == len(calls) == 3 * per_epoch and per_epoch >= 3
    for i, (given, _) in enumerate(calls):
        if i % per_epoch == 0:
            assert not given.any(), i  # reset at each epoch start
        else:
            assert given.any() and np.array_equal(given, calls[i - 1][1]), i  # carried from the step before
    assert np.isfinite(result.valid_perplexity)


@pytest.mark.slow
def test_stateful_resume_is_exact(tmp_path, corpus):
    import numpy as np

    from lmtrain.config.files import load_config
    from lmtrain.data.prepare import prepare
    from lmtrain.fit.loop import fit
    from lmtrain.use.load import load_run

    def config(name, steps):
        (tmp_path / name).mkdir(exist_ok=True)
        return load_config(write_config(tmp_path / name / "c.yaml", tiny_sections(
            tmp_path / name, corpus, data={"dir": str(tmp_path / "data")},
            # A constant rate: warmup_cosine's decay spans max_steps, which this test raises.
            train={"stateful": True, "epochs": 3, "max_steps": steps, "checkpoint_every": 1000,
                   "schedule": "constant"})))

    prepare(config("a", 20), progress=False)
    fit(config("a", 20), progress=False, echo=lambda _: None)
    fit(config("b", 7), progress=False, echo=lambda _: None)  # stops mid-epoch with a carried state
    fit(config("b", 20), progress=False, echo=lambda _: None)
    a, b = load_run(tmp_path / "a" / "run"), load_run(tmp_path / "b" / "run")
    for va, vb in zip(a.model.weights, b.model.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)


def test_embedding_dropout_rate_is_its_own(tmp_path, corpus):
    from lmtrain.build import create_model
    from lmtrain.config.files import config_from_dict
    from lmtrain.config.resolve import resolve

    def rates(**model):
        cfg = config_from_dict(tiny_sections(tmp_path, corpus, model={"num_layers": 2, **model}))
        return [d.rate for d in create_model(resolve(cfg, 1000), 34, [1] * 34).dropouts]

    assert rates(dropout=0.3) == [0.3, 0.3, 0.3]
    assert rates(dropout=0.3, embedding_dropout=0.1) == [0.1, 0.3, 0.3]
    assert all(not lstm.dropout and not lstm.recurrent_dropout for lstm in  # cuDNN-compatible LSTMs
               create_model(resolve(config_from_dict(tiny_sections(tmp_path, corpus, model={"dropout": 0.5})), 1000),
                            34, [1] * 34).lstms)


def test_precision_auto_takes_bfloat16_only_where_the_cpu_multiplies_it_natively(tmp_path):
    from lmtrain.config.precision import choose_precision, cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 fma\nbogomips\t: 1\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx512f", "avx512_bf16", "fma"}
    assert cpu_flags(tmp_path / "missing") == set()
    assert choose_precision("auto", {"avx512f", "avx512_bf16"}) == (
        "mixed_bfloat16", "train.precision=auto: this CPU has avx512_bf16")
    assert choose_precision("auto", {"avx512f", "avx2"})[0] == "float32"
    assert choose_precision("mixed_float16", set()) == ("mixed_float16", "train.precision=mixed_float16")


def test_regularisation_follows_the_runs_exposure_and_a_resumed_run_keeps_it():
    import dataclasses

    from lmtrain.config.files import config_from_dict
    from lmtrain.config.resolve import resolve
    from lmtrain.config.rules import (
        LIGHT,
        REGULARISATION_KEYS,
        STRONG,
        exposure,
        parameter_count,
        regularisation,
    )
    from lmtrain.config.schema import Config

    # the demo model: embedding, LSTM, projection to the tied width, bias
    assert parameter_count(256, 512, 1, 8000, True, 256) == 8000 * 256 + 4 * 512 * (256 + 512 + 1) + 512 * 256 + 8000
    # tying projects
    assert parameter_count(256, 512, 1, 8000, True, None) == parameter_count(256, 512, 1, 8000, True, 256)
    assert exposure(10 * 1000, 1000, 500) == 5.0  # ten passes at half a parameter per token
    assert regularisation(0.5, 10) == LIGHT and regularisation(5.0, 10) == LIGHT and regularisation(1e4, 10) == STRONG
    assert regularisation(1e4, 1.9) == LIGHT  # under two passes: light, however large the model
    middle = [regularisation(e, 10) for e in (10, 30, 99)]
    for key in ("dropout", "weight_drop", "word_dropout", "ar", "tar"):
        values = [LIGHT[key]] + [m[key] for m in middle] + [STRONG[key]]
        assert values == sorted(values) and values[1] > LIGHT[key], (key, values)
    assert all(m["locked_dropout"] for m in middle)

    def chosen(cfg, steps, tokens, **kwargs):
        made = resolve(cfg, steps, train_tokens=tokens, vocab_size=8000, **kwargs).model
        return {k: getattr(made, k) for k in REGULARISATION_KEYS}

    default = Config()
    assert chosen(default, 1000, 50_000_000) == LIGHT  # well under one pass of a large corpus
    assert chosen(default, 1000, 1_300_000) == LIGHT  # the demo: 1.7 passes
    assert chosen(default, 1000, 100_000) == STRONG  # 22 passes of a book
    assert {k: getattr(resolve(default, 1000).model, k) for k in REGULARISATION_KEYS} == LIGHT  # data unknown
    told = config_from_dict({"model": {"dropout": 0.2, "ar": 0.0}})
    made = chosen(told, 1000, 100_000)
    assert made["dropout"] == 0.2 and made["ar"] == 0.0 and made["weight_drop"] == STRONG["weight_drop"]
    resolved = resolve(default, 1000, train_tokens=100_000, vocab_size=8000)
    assert resolve(resolved, 10, train_tokens=10**9, vocab_size=8000) == resolved  # idempotent
    # resumed: the choices the run started with, whatever the rest of it would choose...
    assert chosen(default, 10, 10**9, started=resolved) == STRONG
    # ...and a run directory from before the keys existed (null there) goes on as it trained
    legacy = dataclasses.replace(resolved, model=dataclasses.replace(
        resolved.model, **{k: None for k in REGULARISATION_KEYS}))
    assert chosen(default, 1000, 100_000, started=legacy) == LIGHT


@pytest.mark.slow
def test_fit_says_what_regularisation_the_run_chose(tmp_path, corpus):
    import json

    import yaml

    from lmtrain.config.rules import exposure, parameter_count, regularisation

    # a wide model for the tiny corpus: many parameters per training token
    sections = tiny_sections(tmp_path, corpus, model={"dropout": None, "hidden_dim": 96, "embedding_dim": 16,
                                                      "tie_weights": False}, train={"max_steps": 120, "epochs": 20})
    cfg = write_config(tmp_path / "c.yaml", sections)
    assert cli("prepare", cfg, "-q").exit_code == 0
    r = cli("fit", cfg)
    assert r.exit_code == 0, r.output
    tokens = json.loads((tmp_path / "data" / "meta.json").read_text())["splits"]["train"]["tokens"]
    level = exposure(120 * 4 * 8, tokens, parameter_count(16, 96, 1, 34, False, None))
    want = regularisation(level, 120 * 32 / tokens)
    assert 120 * 32 / tokens > 2 and 5 < level < 100 and want["locked_dropout"]  # between light and strong
    line = next(line for line in r.output.splitlines() if line.startswith("regularisation: "))
    assert line == (f"regularisation: dropout {want['dropout']:g} (locked), weight drop {want['weight_drop']:g}, word "
                    f"dropout {want['word_dropout']:g}, AR {want['ar']:g}, TAR {want['tar']:g} (model.dropout, "
                    f"model.weight_drop, model.word_dropout, model.ar, model.tar and model.locked_dropout null: "
                    f"exposure {level:,.1f} = {120 * 32 / tokens:,.1f} passes x "
                    f"{parameter_count(16, 96, 1, 34, False, None) / tokens:,.2f} parameters per training token; "
                    f"light under 2 passes or up to 5, AWD-LSTM's from 100)")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]
    assert {k: saved[k] for k in want} == want
    # A run directory written before the keys existed loads as it trained: the light setting.
    import lmtrain

    config_file = tmp_path / "run" / "config.yaml"
    old = yaml.safe_load(config_file.read_text())
    for key in ("weight_drop", "word_dropout", "ar", "tar", "locked_dropout"):
        del old["model"][key]
    old["model"]["dropout"] = 0.1
    config_file.write_text(yaml.safe_dump(old))
    loaded = lmtrain.load(tmp_path / "run")
    made = loaded.config.model
    assert (made.weight_drop, made.word_dropout, made.ar, made.tar, made.locked_dropout) == (0.0, 0.0, 0.0, 0.0, False)
    assert loaded.model.embedding.word_seed is None and all(lstm.weight_drop == 0 for lstm in loaded.model.lstms)
