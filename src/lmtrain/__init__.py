"""lmtrain: LSTM language models trained with sampled softmax, evaluated with the full softmax."""

__version__ = "0.1.0"
