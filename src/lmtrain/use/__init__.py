"""Using a trained run: reading it back without the trainer (`load`), exact scoring of a split,
a text or each line (`evaluate`, `perline`), generation (`generate`), the SavedModel and the
LiteRT file (`export`, `litert`), and the Python API `lmtrain.load` returns (`api`). Imports
nothing of `lmtrain.fit`."""
