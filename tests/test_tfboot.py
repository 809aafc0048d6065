"""TensorFlow's CPU-machine start-up notices stay off the console; real errors still show."""

import subprocess
import sys

import pytest

from lmtrain.keras.tfboot import _may_have_gpu, without_notices

NOTICES = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796158780.140613   16425 port.cc:153] oneDNN custom operations are on. You may see slightly different
I0000 00:00:1796158780.141158   16425 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796158780.244123   16425 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796158784.570297   16425 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call
"""


def test_only_the_start_up_notices_are_dropped():
    real = "E0000 00:00:1796158784.570297   16425 op_kernel.cc:1841] OP_REQUIRES failed: out of memory\n"
    assert without_notices(NOTICES) == ""
    traceback = "Traceback (most recent call last):\n"
    assert without_notices(NOTICES + real + traceback) == real + traceback


def _stderr(*args: str) -> str:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    return out.stderr


@pytest.mark.slow
def test_library_import_and_a_cli_verb_print_no_notices(tmp_path):
    library = _stderr("-c", "import lmtrain.keras")
    # a verb that imports TensorFlow and then fails on the user's input: only its error line shows
    verb = _stderr("-m", "lmtrain", "fit", "--set", f"data.dir={tmp_path / 'none'}", "-q")
    assert verb.strip().splitlines()[-1].startswith("error: no prepared data in"), verb
    if not _may_have_gpu():  # with a GPU the CUDA lines carry information and are kept
        assert library == "", library
        assert len(verb.strip().splitlines()) == 1, verb
