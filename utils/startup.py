"""TensorFlow's start-up lines, kept out of the notebooks.

TensorFlow's native code writes a block of lines to the process's stderr when it loads and first
looks for a GPU: the absl warning about logging before `InitializeLog`, oneDNN and CUDA notices,
and on a machine without a GPU an `E0000 ... failed call to cuInit` that reads as an error.
`TF_CPP_MIN_LOG_LEVEL` does not reach the lines written before absl's log is set up
(tensorflow/tensorflow#100442), so `hide_tensorflow_startup_lines` routes the process's stderr
(file descriptor 2) through a pipe and copies every line to the real stderr except those known
start-up lines (and the speed line of the COCO evaluation's Java tokenizer, printed at every
score). Everything else, errors and warnings included, still shows: at exit the pipe is drained
before the process ends, so a script's last lines (a traceback) are never lost. `import utils`
installs it when a module that loads TensorFlow is first used, so a script of three lines is as
quiet as a notebook.
"""
import atexit
import os
import re
import sys
import threading

__all__ = ["TENSORFLOW_STARTUP_LINES", "is_startup_line", "hide_tensorflow_startup_lines"]

# Lines TensorFlow (and its XLA and CUDA plugins) print on every start, each harmless.
TENSORFLOW_STARTUP_LINES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|^[IWE]\d{4} [\d:. ]+\d+ (port\.cc|cudart_stub\.cc|cuda_platform\.cc|cuda_executor\.cc"
    r"|cpu_feature_guard\.cc|util\.cc|cuda_dnn\.cc|cuda_blas\.cc|cuda_fft\.cc"
    r"|computation_placer\.cc|gpu_device\.cc|service\.cc|device_compiler\.h|dso_loader\.cc)"
    r":\d+\] (oneDNN|Could not find cuda drivers|failed call to cuInit|This TensorFlow binary"
    r"|To enable the following|Unable to register|computation placer already registered"
    r"|XLA service|  StreamExecutor|Compiled cluster|Created device|Could not load dynamic"
    r"|TF-TRT Warning)"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
    # ...and the line the COCO evaluation's tokenizer (Java, pycocoevalcap) prints at each call.
    r"|^PTBTokenizer tokenized \d+ tokens at [\d.]+ tokens per second")

_installed = False


def is_startup_line(line):
    return bool(TENSORFLOW_STARTUP_LINES.search(line))


def hide_tensorflow_startup_lines():
    """From now on, in this process, TensorFlow's start-up lines no longer reach stderr (call it
    before TensorFlow loads; a second call does nothing)."""
    global _installed
    if _installed:
        return
    _installed = True
    read_end, write_end = os.pipe()
    real_stderr = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)

    def copy_lines():
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            for line in iter(pipe.readline, b""):
                if not is_startup_line(line.decode("utf-8", "replace")):
                    os.write(real_stderr, line)

    copier = threading.Thread(target=copy_lines, name="stderr-filter", daemon=True)
    copier.start()

    def drain():
        """Close the pipe (fd 2 back to the real stderr) and let every line written through."""
        sys.stderr.flush()
        os.dup2(real_stderr, 2)
        copier.join(timeout=5)

    atexit.register(drain)
