"""The real Flickr8k files beside the checkout (../shared/flickr8k), read in one place for every
benchmark: its captions and official splits, prepared as notebook 01 prepares them, and the
ImageNet features of its 875 photos (an external .npz, as a user would bring), or with `full` of
all 6,997 train and dev photos of the official split (a features-only dataset: no photo read)."""
import sys
import warnings
from pathlib import Path

import numpy as np

import utils

REPO = Path(__file__).resolve().parent.parent

SHARED = REPO.parent / "shared" / "flickr8k"
FEATURES = SHARED / "features" / "efficientnet_lite0_imagenet.npz"
# The same network's 7x7 grids of the same photos (their mean is the pooled vector), for attention.
GRIDS = SHARED / "features" / "efficientnet_lite0_spatial.npz"
# The same network's pooled features of every train and dev photo of the official split (from
# 224-px copies, squashed whole; the test split's are withheld), for the full-split benchmarks.
TRAINVAL = SHARED / "features" / "flickr8k_trainval_efficientnet_lite0.npz"
# Each network's pooled features of those photos (the same order, made alike), by encoder.
TRAINVAL_BY_ENCODER = {"efficientnet_lite0": TRAINVAL, "efficientnet_lite2": SHARED / "features"
                       / "flickr8k_trainval_efficientnet_lite2.npz"}


def shared_dir():
    """../shared/flickr8k, or an exit with one line saying what it is."""
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is missing: the benchmarks (only they) need real Flickr8k files "
                 "beside the checkout: captions, official splits, photos and their features")
    return SHARED


class SharedData:
    """The shared subset's features (with `grid`, its grids of positions; with `full`, the whole
    official split's pooled features, of each of `encoders` side by side) and captions, each
    prepared once per cleaning option."""

    def __init__(self, grid=False, full=False, encoders=("efficientnet_lite0",)):
        if grid and full:
            raise ValueError("the whole split has pooled features only, no grids")
        if not full and encoders != ("efficientnet_lite0",):
            raise ValueError("only the whole split has features of other encoders")
        paths = [TRAINVAL_BY_ENCODER[e] for e in encoders] if full else [GRIDS if grid else FEATURES]
        self.path, self.encoders = paths[0], encoders
        tables = [utils.load_features(shared_dir() / "features" / p.name, grid=grid) for p in paths]
        if any(names != tables[0][0] for names, _ in tables):
            raise ValueError(f"{', '.join(p.name for p in paths)}: not the same photos in one order")
        self.names = tables[0][0]
        self.features = np.concatenate([np.asarray(f, "float32") for _, f in tables], axis=-1)
        self.images_dir, self.captions_file, self.split_files = utils.find_dataset_files(SHARED)
        if full:  # features-only: their names stand for the photos, none of which is read
            self.images_dir = None
        self.full = full
        self._prepared, self._glove = {}, None

    def prepared(self, drop_one_letter=False):
        if drop_one_letter not in self._prepared:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the token file names 8,090 images, not all here
                self._prepared[drop_one_letter] = utils.prepare_dataset(
                    self.captions_file, self.images_dir, self.split_files,
                    drop_one_letter=drop_one_letter,
                    feature_names=self.names if self.full else None)[0]
        return self._prepared[drop_one_letter]

    def captions(self, min_count=5, drop_one_letter=False):
        """(vocabulary of the train captions, CaptionData of the train and dev captions)."""
        prepared = self.prepared(drop_one_letter)
        vocab = utils.build_vocabulary(utils.split_captions(prepared, "train"), min_count)
        return vocab, utils.CaptionData.encode(prepared, vocab, self.names, self.features)

    def embedding(self, vocab, seed):
        """The GloVe 50d matrix of `vocab` (vectors read from the PyPI package once)."""
        if self._glove is None:
            words = {w for c in utils.split_captions(self.prepared(), "train") for w in c.split()}
            self._glove = utils.load_glove(words, "pypi", 50)[0]
        return utils.embedding_matrix(vocab, self._glove, 50, seed=seed)

    def split(self, split, drop_one_letter=False):
        """(names, feature rows, raw reference sentences) of a split's images with features."""
        prepared = self.prepared(drop_one_letter)
        row = {n: i for i, n in enumerate(self.names)}
        names = [n for n in prepared.names(split) if n in row]
        return names, self.features[[row[n] for n in names]], prepared.raw_references(names)
