"""Which precision a run computes in: `train.precision`, or for `auto` what this machine runs fastest.

bfloat16 matrix products run at up to twice float32's rate on CPUs with `avx512_bf16` or AMX and
on GPUs from compute capability 8.0 (Ampere); elsewhere TensorFlow emulates them, slower than
float32. `mixed_bfloat16` keeps the weights, the LSTM's cell and the softmax in float32 (see
`lmtrain.keras.lstm.fused_lstm` and `lmtrain.model`), so it needs no loss scaling.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

# CPU flags (as Linux's /proc/cpuinfo names them) of native bfloat16 products.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def choose_precision(setting: str, flags: set[str] | None = None) -> tuple[str, str]:
    """(the Keras dtype policy to train with, why), for `train.precision`: itself, or for auto
    mixed_bfloat16 where the hardware multiplies bfloat16 natively and float32 elsewhere.
    `flags`: the CPU's feature flags (default: `cpu_flags()`)."""
    if setting != "auto":
        return setting, f"train.precision={setting}"
    gpus = tf.config.get_visible_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        if tuple(capability) >= (8, 0):
            return "mixed_bfloat16", f"train.precision=auto: the GPU's compute capability {capability} has bfloat16"
        return "float32", f"train.precision=auto: the GPU's compute capability {capability} has no fast bfloat16"
    flags = cpu_flags() if flags is None else flags
    native = [f for f in BF16_CPU_FLAGS if f in flags]
    if native:
        return "mixed_bfloat16", f"train.precision=auto: this CPU has {' and '.join(native)}"
    return "float32", "train.precision=auto: this CPU multiplies bfloat16 no faster than float32"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags, from Linux's /proc/cpuinfo (empty elsewhere: no bfloat16 assumed)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()
