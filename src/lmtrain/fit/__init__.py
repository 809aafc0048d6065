"""The training stage (`lmtrain fit`): the loop (`loop`), the training step as a component
that takes the model (`step`), the compiled step as `fit` runs it (`trainer`), what the loop
checkpoints with itself (`loopstate`), weight averaging (`averaging`), `tf.distribute`
(`distribute`) and the step's FLOP count (`flops`). Nothing outside it imports it but the CLI
and the benchmarks."""
