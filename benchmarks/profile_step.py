"""Where a training step's time goes: TensorFlow's profiler over `fit`'s own step, summed by op.

Builds the step as `lmtrain fit` does (`build_trainer`, default: the demo config, B 64 x T 35,
ids from a Zipf law), runs it a few times under `tf.profiler`, and reads the trace it writes
(the XPlane protobuf TensorFlow ships) into a table of the ops that took the most time on the
CPU's threads: op type, total milliseconds per step, share of the step, calls per step. Ops run
in parallel on the two cores, so the shares can sum past 100%; what matters is which ops lead
and how they change between precisions (`--set train.precision=mixed_bfloat16`).

Usage: python benchmarks/profile_step.py [--config configs/demo.yaml] [--set KEY=VALUE ...] [--steps 5] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from common import synthetic_batch, zipf_counts  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from lmtrain.config.files import load_config  # noqa: E402
from lmtrain.config.resolve import resolve  # noqa: E402
from lmtrain.fit.trainer import build_trainer  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=DEMO)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    config = load_config(args.config, args.overrides)
    t = config.train
    counts = zipf_counts(args.vocab)
    batch = synthetic_batch(counts, t.batch_size, t.seq_len)
    step = build_trainer(resolve(config, 1000), args.vocab, counts.tolist()).train_fn
    for _ in range(3):
        float(step(batch)["loss"])
    logdir = tempfile.mkdtemp(prefix="lmtrain-profile-")
    tf.profiler.experimental.start(logdir)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        float(step(batch)["loss"])
    wall = (time.perf_counter() - t0) / args.steps
    tf.profiler.experimental.stop()
    totals, calls = op_times(logdir)
    print(f"\n{config.train.precision}: {1000 * wall:.1f} ms a step (under the profiler); "
          f"ops summed over both cores' threads, per step")
    print("| op | ms per step | share of step | calls per step |")
    print("|---|---:|---:|---:|")
    for name, ns in totals.most_common(args.top):
        ms = ns / 1e6 / args.steps
        print(f"| {name} | {ms:.2f} | {100 * ms / (1000 * wall):.1f}% | {calls[name] / args.steps:.0f} |")


def op_times(logdir: str) -> tuple[collections.Counter, collections.Counter]:
    """Total nanoseconds and calls per op type in the host plane of the profiler's trace."""
    totals: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    for path in glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True):
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(path).read_bytes())
        for plane in space.planes:
            if "Host" not in plane.name and "CPU" not in plane.name:
                continue
            for line in plane.lines:
                if "python" in line.name.lower():
                    continue
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    # TensorFlow names an op's event "node_name:OpType"; sum by type.
                    kind = name.rsplit(":", 1)[-1] if ":" in name else name
                    totals[kind] += event.duration_ps // 1000
                    calls[kind] += 1
    return totals, calls


if __name__ == "__main__":
    main()
