"""Shared code of the notebooks, one module per stage; `import utils` gives all of it.

    files       atomic writes, JSON, the repository's folders
    captions    stage 1: reading caption files, split files, cleaning
    prepared    stage 1: a dataset found on disk, split, cleaned and saved for later stages
    vocabulary  stage 1: the training vocabulary, word ids, saved as JSON
    download    resumable downloads of any file
    datasets    Flickr8k by name, and the embedded sample dataset
    glove       stage 3: GloVe vectors from every source, the embedding matrix
    images      reading any image file safely, for the encoders and for the figures
    plots       photos with their captions, as a figure
    startup     TensorFlow's start-up lines kept out of the notebooks
    colab       Google Colab: Drive for what must last, a light install, the repository's address
    record      a run's record (config.json): RunConfig and the configs it holds, read and checked
  loaded on first use (they import TensorFlow, or nltk and pycocoevalcap):
    encoders    stage 2: the pretrained CNNs, their preprocessing and settings
    efficientnet_lite  stage 2: EfficientNet-Lite0 in Keras, Google's weights read offline
    features    stage 2: the feature cache and features made elsewhere, as later stages read them
    extraction  stage 2: extracting features into the cache, resumable and sharded
    architectures  stage 4: the caption models, one class per architecture, a file per family
    pipeline    stage 4: captions encoded, tf.data batches streamed from the feature table
    training    stage 4: the loss, resumable training with its callbacks
    cider       CIDEr-D on word ids, with fixed document frequencies: self-critical's reward
    self_critical  stage 4's second phase: REINFORCE on the CIDEr-D of sampled captions
    seed_recipe the seed projects' one-sample-per-prefix formulation, to compare with
    search      stage 5: the one search (greedy, beam, sampling) as one compiled graph
    decoding    stage 5: decoding settings, captions from the search, ensembles
    metrics     stage 5: BLEU, METEOR, CIDEr-D as the COCO evaluation computes them; paired
                intervals (nltk and pycocoevalcap, no TensorFlow)
    evaluation  stage 5: `evaluate` (decode, score, diagnose, a control), its results file, and
                a run's scores as the app shows them
    runs        a run folder: saved before training, loaded, runs joined as an ensemble
    distillation  stage 4 with teachers: finished runs teach a student, word and sequence level
    captioning  new photos captioned with a run: its encoder rebuilt, then its decoder
    export      a run or an ensemble as one SavedModel: photo bytes in, captions out
    run_archive a run in one file: exported, and imported from a path or an address

Notebooks 01 and 03 never pay TensorFlow's start-up: the heavy modules are imported when one of
their names is first used (PEP 562).
"""
import ast
import functools
import importlib
from pathlib import Path

from .captions import *
from .colab import *
from .datasets import *
from .download import *
from .files import *
from .glove import *
from .images import *
from .plots import *
from .prepared import *
from .record import *
from .startup import *
from .startup import hide_tensorflow_startup_lines
from .vocabulary import *

LAZY_MODULES = ("encoders", "efficientnet_lite", "features", "extraction", "pipeline",
                "architectures", "training", "cider", "self_critical", "seed_recipe", "search",
                "decoding", "metrics", "evaluation", "runs", "distillation", "captioning", "export",
                "run_archive")


def _public_names(module_name):
    """A module's `__all__`, read from its source without importing it (nor TensorFlow)."""
    path = Path(__file__).parent / module_name
    tree = ast.parse((path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text())
    return next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__all__"])


@functools.cache
def _lazy_names():
    """Every lazily loaded name -> its module: tab completion sees them (`__dir__`), and a
    mistyped name fails at once instead of after importing TensorFlow. Read on first need, not
    at `import utils` (parsing the modules takes about 70 ms)."""
    return {name: module for module in LAZY_MODULES for name in _public_names(module)}


# Stage 2 and the pure metrics; every other lazy module (stages 4 and 5) loads `pipeline` first,
# whose TensorFlow setting holds only if written before TensorFlow starts (utils/pipeline.py).
WITHOUT_PIPELINE = ("encoders", "efficientnet_lite", "features", "extraction", "cider", "metrics")


def _load(module_name):
    hide_tensorflow_startup_lines()  # before TensorFlow loads: see utils/startup.py
    if module_name not in WITHOUT_PIPELINE:
        importlib.import_module(".pipeline", __name__)
    return importlib.import_module(f".{module_name}", __name__)


def __getattr__(name):
    if name in LAZY_MODULES:
        return _load(name)
    if name not in _lazy_names():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_load(_lazy_names()[name]), name)
    globals()[name] = value  # found once, then an ordinary attribute
    return value


def __dir__():
    return sorted({*globals(), *LAZY_MODULES, *_lazy_names()})
