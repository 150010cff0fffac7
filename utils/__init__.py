"""Shared code of the notebooks, one module per stage; `import utils` gives all of it.

    files       atomic writes, JSON, the repository's folders
    captions    stage 1: reading caption files, splits, cleaning, vocabulary
    download    resumable downloads of any file
    datasets    Flickr8k by name, and the embedded sample dataset
    glove       stage 3: GloVe vectors from every source, the embedding matrix
    plots       photos with their captions, as a figure
    startup     TensorFlow's start-up lines kept out of the notebooks
    colab       Google Colab: Drive for what must last, a light install, the repository's address
  loaded on first use (they import TensorFlow, or nltk and pycocoevalcap):
    features    stage 2: CNN encoders, image loading, the resumable feature cache
    model       stage 4: the merge model and its configs, tf.data input, resumable training
    decoding    stage 5: decoding settings, incremental greedy and beam search
    evaluation  stage 5: BLEU, CIDEr-D, diagnostics, and `evaluate` with its results file
    runs        a run's record (config.json), loading it, captioning new photos with it

Notebooks 01 and 03 never pay TensorFlow's start-up: the heavy modules are imported when one of
their names is first used (PEP 562).
"""
import importlib

from .captions import *  # noqa: F401,F403
from .colab import *  # noqa: F401,F403
from .datasets import *  # noqa: F401,F403
from .download import *  # noqa: F401,F403
from .files import *  # noqa: F401,F403
from .glove import *  # noqa: F401,F403
from .plots import *  # noqa: F401,F403
from .startup import *  # noqa: F401,F403

LAZY_MODULES = ("features", "model", "decoding", "evaluation", "runs")


def __getattr__(name):
    if name in LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if not name.startswith("__"):  # tools probe dunders; those must not load TensorFlow
        for module_name in LAZY_MODULES:
            module = importlib.import_module(f".{module_name}", __name__)
            if name in module.__all__:
                value = getattr(module, name)
                globals()[name] = value  # found once, then an ordinary attribute
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
