"""lmtrain.config.schema and lmtrain.config.files: the schema's defaults and checks, YAML and --set loading,
did-you-mean."""

import dataclasses
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmtrain.config.files import config_from_dict, load_config
from lmtrain.config.schema import Config, DataConfig, ModelConfig, TokenizerConfig, TrainConfig
from lmtrain.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_demo_config():
    assert load_config(REPO / "configs" / "demo.yaml") == Config()
    assert Config().tokenizer.vocab_size == 8000 and Config().model.hidden_dim == 512


def test_overrides_are_yaml_typed(tmp_path):
    cfg = load_config(None, ["train.batch_size=7", "model.dropout=0.5", "data.corpus=[a.txt, b.txt]",
                             "train.max_steps=null"])
    assert cfg.train.batch_size == 7 and cfg.model.dropout == 0.5
    assert cfg.data.corpus == ("a.txt", "b.txt") and cfg.train.max_steps is None


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"train": {"batch_sise": 3}}, "train.batch_sise (did you mean train.batch_size?)"),
        ({"trian": {}}, "'trian' (did you mean train?)"),
        ({"train": {"batch_size": "big"}}, "train.batch_size: expected an integer, got 'big'"),
        ({"train": {"batch_size": True}}, "train.batch_size: expected an integer"),
        ({"train": {"batch_size": 0}}, "train.batch_size: must be >= 1, got 0"),
        ({"model": {"dropout": 1.5}}, "model.dropout: must be between"),
        ({"model": {"softmax": "sampeld"}}, "model.softmax: must be one of auto | sampled | full, got 'sampeld' "
                                            "(did you mean 'sampled'?)"),
        ({"tokenizer": {"model_type": "wordpiece"}}, "tokenizer.model_type: must be one of"),
        ({"tokenizer": {"vocab_size": 100}, "model": {"softmax": "sampled", "num_sampled": 100}},
         "model.num_sampled: 100 must be smaller than the vocabulary (100 ids in tokenizer.vocab_size)"),
        ({"data": {"corpus": 3}}, "data.corpus: expected a string or a list of strings"),
        ({"train": 5}, "train: expected a mapping"),
        ({"tokenizer": {"min_count": 2}}, "tokenizer.min_count: 2 needs tokenizer.model_type=word and "
         "tokenizer.vocab_size=null (got model_type unigram, vocab_size 8000)"),
        ({"tokenizer": {"model_type": "word", "vocab_size": None, "min_count": 0}},
         "tokenizer.min_count: must be >= 1"),
        ({"train": {"optimizer": "sgd"}}, "train.learning_rate: null stands for an Adam rate"),
    ],
)
def test_bad_values_name_key_and_value(raw, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.nope=1", "--set train.nope: unknown key 'nope' in section 'train'"),
        ("train.batchsize=1", "did you mean train.batch_size?"),
        ("trainer.batch_size=1", "unknown section 'trainer' (did you mean train?)"),
        ("batch_size", "expected section.key=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_yaml_files_are_loaded_safely(tmp_path):
    bad = tmp_path / "evil.yaml"
    bad.write_text("train: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        load_config(listy)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_fingerprint_keeps_old_data_valid_except_word_level_data():
    # min_count at its default leaves subword fingerprints as they were; word-level data prepared
    # before each unknown word got its own <unk> must be prepared again, and min_count counts.
    plain = config_from_dict({})
    word = config_from_dict({"tokenizer": {"model_type": "word", "vocab_size": None}})
    rare = config_from_dict({"tokenizer": {"model_type": "word", "vocab_size": None, "min_count": 2}})
    assert plain.data_fingerprint() == "9e9683d0fda642aa"  # what main before min_count wrote
    assert len({plain.data_fingerprint(), word.data_fingerprint(), rare.data_fingerprint()}) == 3


def test_fingerprint_ignores_where_data_goes():
    a = load_config(None, ["data.dir=x"])
    b = load_config(None, ["data.dir=y"])
    c = load_config(None, ["tokenizer.vocab_size=4000"])
    assert a.data_fingerprint() == b.data_fingerprint() != c.data_fingerprint()


# ---- property: any input loads into a valid config or raises ConfigError, nothing else -------


_FIELDS = {name: [f.name for f in dataclasses.fields(cls)]
           for name, cls in {"data": DataConfig, "tokenizer": TokenizerConfig, "model": ModelConfig,
                             "train": TrainConfig}.items()}
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["auto", "sampled", "full", "stop", "skip", "lazy_adam", "float32", "word", "unigram"]),
)
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                       max_leaves=6)
_section_names = st.one_of(st.sampled_from(sorted(_FIELDS)), st.text(max_size=8))


@st.composite
def _raw_configs(draw):
    raw = {}
    for section in draw(st.lists(_section_names, max_size=5)):
        keys = _FIELDS.get(section, []) + ["unknown_key"]
        if draw(st.booleans()) and section in _FIELDS:
            raw[section] = draw(st.one_of(_scalars, st.lists(_scalars, max_size=2)))  # not a mapping
        else:
            names = st.one_of(st.sampled_from(keys), st.text(max_size=8))
            raw[section] = draw(st.dictionaries(names, _values, max_size=4))
    return raw


_overrides = st.lists(
    st.one_of(
        st.builds(lambda s, k, v: f"{s}.{k}={v}", st.sampled_from(sorted(_FIELDS)),
                  st.sampled_from(sorted({k for ks in _FIELDS.values() for k in ks})), st.text(max_size=12)),
        st.text(max_size=20),
    ),
    max_size=3,
)


def _loads_or_config_error(fn):
    try:
        cfg = fn()
    except ConfigError:
        return
    assert isinstance(cfg, Config)
    for section in ("data", "tokenizer", "model", "train"):  # every number in a loaded config is finite
        for value in dataclasses.asdict(getattr(cfg, section)).values():
            if isinstance(value, float):
                assert math.isfinite(value)
    assert config_from_dict(cfg.to_dict()) == cfg  # what fit writes to the run directory loads back


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_raw_configs(), overrides=_overrides)
def test_loader_accepts_or_raises_config_error_only(raw, overrides):
    _loads_or_config_error(lambda: config_from_dict(raw))
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/c.yaml"
        with open(path, "w") as fh:
            yaml.safe_dump(raw, fh)
        _loads_or_config_error(lambda: load_config(path, overrides))


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=80), st.sampled_from(
    ["train: {seed: 2020-99-99}", "train: !!python/name:os.system", "a: &x [*x]", "train:\n  - 1", "{", "- ["])))
def test_any_yaml_text_loads_or_raises_config_error_only(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/c.yaml"
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(text)
        _loads_or_config_error(lambda: load_config(path))


def test_reading_a_config_needs_no_tensorflow(tmp_path):
    """`lmtrain prepare` needs no TensorFlow: loading and checking a config must not import it.
    (Only `model.softmax: sampled` with a vocabulary checks the negatives at load, with the rule
    the library owns, and importing the library imports TensorFlow.)"""
    path = tmp_path / "c.yaml"
    path.write_text("tokenizer: {vocab_size: 2000}\nmodel: {hidden_dim: 64}\n")
    code = (f"import sys; from lmtrain.config.files import load_config; c = load_config({str(path)!r}); "
            f"print(c.model.hidden_dim, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["64", "False", "False"]
