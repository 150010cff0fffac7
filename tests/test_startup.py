"""TensorFlow's start-up lines are recognised, and nothing else is."""
import os
import subprocess
import sys

import utils
from conftest import REPO

SEEN = [  # as TensorFlow 2.20 printed them on this project's machines
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795609256.939587   31644 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors.",
    "I0000 00:00:1795609256.939892   31644 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "E0000 00:00:1795609258.941836   31644 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1795608889.025540   27675 util.cc:131] oneDNN supports DT_BOOL only on platforms "
    "with AVX-512. Falling back to the default Eigen-based implementation if present.",
    "E0000 00:00:1759573879.528330   74721 cuda_dnn.cc:8579] Unable to register cuDNN factory: "
    "Attempting to register factory for plugin cuDNN when one has already been registered",
]
SEEN += ["PTBTokenizer tokenized 2385 tokens at 57885.43 tokens per second."]  # pycocoevalcap's
KEPT = [
    "E0000 00:00:1795609258.941836   31644 cuda_platform.cc:52] out of memory allocating 4 GB",
    "W0000 00:00:1795609258.941836   31644 op_level_cost_estimator.cc:699] Error in PredictCost()",
    "Traceback (most recent call last):",
    "ResourceExhaustedError: OOM when allocating tensor",
]


def test_startup_lines_are_recognised_and_nothing_else():
    assert all(utils.is_startup_line(line) for line in SEEN)
    assert not any(utils.is_startup_line(line) for line in KEPT)


def test_a_process_keeps_its_other_stderr_lines():
    code = ("import os, sys, time, utils; utils.hide_tensorflow_startup_lines(); "
            f"[os.write(2, (l + chr(10)).encode()) for l in {SEEN + KEPT!r}]; "
            "import tensorflow as tf; tf.config.list_physical_devices(); time.sleep(0.3)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stderr.splitlines() == KEPT


def test_a_script_of_a_run_is_quiet_and_keeps_its_last_lines(tmp_path):
    """The shipped run's three lines print no start-up line, with nothing set beforehand; a
    traceback written as the process ends still comes through whole."""
    code = ("import utils\n"
            "captioner = utils.Captioner.from_run('models/flickr8k-pretrained')\n"
            "raise SystemExit(utils.caption_image(captioner, 'no such photo.jpg'))\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env=env)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):", done.stderr[-3000:]
    assert lines[-1].startswith("utils.images.ImageError: no such photo.jpg"), done.stderr[-3000:]
    assert not [line for line in lines if utils.is_startup_line(line)]
