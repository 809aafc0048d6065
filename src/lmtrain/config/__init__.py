"""The config stage: the schema of every key (`schema`), YAML files and `--set` overrides
(`files`), what a null or `auto` key stands for in one run (`resolve`, with the rules behind it
in `rules` and the hardware's choice of precision in `precision`). Imports nothing of the
stages after it."""
