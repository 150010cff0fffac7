"""Shared code of the notebooks, one module per stage; `import utils` gives all of it.

    files     atomic writes, JSON, the repository's folders
    captions  stage 1: reading caption files, splits, cleaning, vocabulary
    sample    the embedded synthetic dataset
    download  resumable downloads, Flickr8k
    features  stage 2: CNN encoders, image loading, the resumable feature cache
    glove     stage 3: GloVe vectors from every source, the embedding matrix
    model     stage 4: the merge model, tf.data input, resumable training runs
    decoding  stage 5: incremental greedy and beam-search captioning
    evaluation  stage 5: BLEU, CIDEr-D and diagnostics of the captions
"""
from .captions import *  # noqa: F401,F403
from .download import *  # noqa: F401,F403
from .files import *  # noqa: F401,F403
from .sample import *  # noqa: F401,F403
from .features import *  # noqa: F401,F403
from .glove import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403
from .decoding import *  # noqa: F401,F403
from .evaluation import *  # noqa: F401,F403
