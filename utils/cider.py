"""CIDEr-D as a reward: pycocoevalcap's CIDEr-D computed with numpy on word ids, with the
document frequencies of one fixed set of references.

The evaluation (utils.metrics) takes CIDEr-D's document frequencies from the evaluated images'
own references, right for a score; a reward must keep one set, the *training* references', for
every caption it scores (self-critical.pytorch's `rewards`, here `CiderD`). Counting n-grams on
word ids instead of strings makes scoring the samples of a batch cheap enough to do at every step
of training; a test shows the scores equal pycocoevalcap's.
"""
from dataclasses import dataclass

import numpy as np

from .files import atomic_path

__all__ = ["ORDERS", "SIGMA", "ngram_keys", "CiderD"]

ORDERS = 4       # CIDEr-D's n-grams: 1 to 4 words
SIGMA = 6.0      # CIDEr-D's length penalty: a Gaussian of this width on the length difference
_ID_BITS = 15    # bits of one word id in an n-gram's key: vocabularies up to 32,768 words
_ORDER_SHIFT = ORDERS * _ID_BITS  # the key's top bits say how many words it has


def ngram_keys(words):
    """[N, 4, L] int64: the key of the n-gram of n + 1 words starting at each position of each
    caption (word ids [N, L], 0 after the last word), -1 where it runs past the caption's words.
    One key per distinct n-gram of any order: counting them is numpy's `unique`."""
    words = np.asarray(words, np.int64)
    if words.size and words.max() >= 1 << _ID_BITS:
        raise ValueError(f"word id {words.max()} does not fit CIDEr-D's n-gram keys "
                         f"({1 << _ID_BITS} words at most)")
    keys = np.full((len(words), ORDERS, words.shape[1]), -1, np.int64)
    key, whole = np.zeros(words.shape, np.int64), np.ones(words.shape, bool)
    for n in range(ORDERS):
        shifted = np.zeros_like(words)
        shifted[:, :max(words.shape[1] - n, 0)] = words[:, n:]  # none: a caption of < n words
        key |= shifted << (_ID_BITS * n)
        whole &= shifted > 0
        keys[:, n] = np.where(whole, key | (n << _ORDER_SHIFT), -1)
    return keys


def _counts(keys):
    """(distinct keys, their counts) of one caption's `ngram_keys`."""
    return np.unique(keys[keys >= 0], return_counts=True)


def _find(sorted_keys, keys):
    """(where each of `keys` is or would go in `sorted_keys`, clamped to a valid index; whether
    it is there)."""
    at = np.minimum(np.searchsorted(sorted_keys, keys), max(len(sorted_keys) - 1, 0))
    found = sorted_keys[at] == keys if len(sorted_keys) else np.zeros(len(keys), bool)
    return at, found


@dataclass(frozen=True)
class _Vectors:
    """Captions' CIDEr-D vectors: tf-idf weights over `keys` [G] (one row per caption [C, G]),
    their norms per n-gram order [C, 4] and lengths [C]."""
    keys: np.ndarray
    weights: np.ndarray
    norms: np.ndarray
    lengths: np.ndarray


class CiderD:
    """CIDEr-D as pycocoevalcap computes it (tf-idf n-gram vectors, clipped, with a Gaussian
    length penalty; x10), with the document frequencies of one fixed set of references: a
    reward, not an evaluation. Captions are word ids; a test shows it equals pycocoevalcap's."""

    def __init__(self, keys, frequencies, images):
        self.keys, self.frequencies = np.asarray(keys, np.int64), np.asarray(frequencies)
        self.log_images = np.log(float(images))
        self.images = int(images)

    @classmethod
    def from_references(cls, references):
        """Document frequencies of `references` (per image, its captions [captions, words]): in
        how many images' references each n-gram appears."""
        per_image = [np.unique(k[k >= 0]) for k in (ngram_keys(r) for r in references)]
        keys, frequencies = np.unique(np.concatenate(per_image or [np.zeros(0, np.int64)]),
                                      return_counts=True)
        return cls(keys, frequencies, len(references))

    def save(self, path):
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=self.keys, frequencies=self.frequencies, images=self.images)

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as f:
            return cls(f["keys"], f["frequencies"], int(f["images"]))

    def _idf(self, keys):
        """log(images) - log(max(1, document frequency)) of each key."""
        at, found = _find(self.keys, keys)
        return self.log_images - np.log(np.maximum(np.where(found, self.frequencies[at], 0), 1))

    def vectors(self, captions):
        """`_Vectors` of captions (word ids [C, L]) over the distinct n-grams they hold."""
        counted = [_counts(k) for k in ngram_keys(captions)]
        keys = np.unique(np.concatenate([k for k, _ in counted] or [np.zeros(0, np.int64)]))
        weights = np.zeros((len(counted), len(keys)))
        for row, (k, n) in enumerate(counted):
            weights[row, np.searchsorted(keys, k)] = n
        lengths = weights[:, (keys >> _ORDER_SHIFT) == 1].sum(1)  # pycocoevalcap's: its bigrams
        weights *= self._idf(keys)
        order = keys >> _ORDER_SHIFT
        norms = np.sqrt(np.stack([(weights[:, order == n] ** 2).sum(1) for n in range(ORDERS)], 1))
        return _Vectors(keys, weights, norms, lengths)

    def scores(self, references, captions):
        """CIDEr-D [S] of each of `captions` [S, L] against one image's `references`: either its
        captions [R, L] or their `vectors` (computed once per image by the caller)."""
        refs = references if isinstance(references, _Vectors) else self.vectors(references)
        own = self.vectors(captions)
        # The captions' weights on the references' n-grams; others match nothing.
        at, shared = _find(refs.keys, own.keys)
        weights = np.zeros((len(captions), len(refs.keys)))
        weights[:, at[shared]] = own.weights[:, shared]                     # (S, G)
        clipped = np.minimum(weights[:, None], refs.weights[None]) * refs.weights[None]  # (S, R, G)
        orders = np.eye(ORDERS)[refs.keys >> _ORDER_SHIFT]                  # (G, 4)
        similarity = clipped @ orders                                       # (S, R, 4)
        norms = own.norms[:, None] * refs.norms[None]                       # (S, R, 4)
        similarity = np.where(norms > 0, similarity / np.where(norms > 0, norms, 1), similarity)
        delta = own.lengths[:, None] - refs.lengths[None]                   # (S, R)
        penalty = np.exp(-delta ** 2 / (2 * SIGMA ** 2))
        return (similarity * penalty[..., None]).mean(2).mean(1) * 10.0
