"""The data stage: a corpus read as a stream (`corpus`, `formats`), the tokenizer (`tokenizer`,
`vocabsample`), encoding and the TFRecord shards `prepare` writes (`encode`, `shards`,
`prepare`, `meta`), and reading them back for training and scoring (`records`)."""
