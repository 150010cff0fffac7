"""Stage 1's vocabulary: the training captions' frequent words and their ids, saved as JSON.

Ids are stable from run to run (words by frequency, ties alphabetically), padding is id 0, and a
fingerprint of the words travels with every embedding matrix and run made with them.
"""
import hashlib
from collections import Counter

from .captions import MAX_CAPTION_WORDS, CaptionFileError
from .files import read_json, require, write_json

__all__ = ["PAD", "UNK", "START", "END", "SPECIAL_TOKENS", "Vocabulary", "build_vocabulary"]


PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"
SPECIAL_TOKENS = (PAD, UNK, START, END)


class Vocabulary:
    """Word <-> id mapping with padding at id 0, plus the maximum caption length in words."""

    def __init__(self, words, max_length):
        if tuple(words[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary starts with {SPECIAL_TOKENS}")
        self.words = list(words)
        self.max_length = int(max_length)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.pad_id, self.unk_id, self.start_id, self.end_id = range(len(SPECIAL_TOKENS))

    def __len__(self):
        return len(self.words)

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and (self.words, self.max_length) == (
            other.words, other.max_length)

    @property
    def fingerprint(self):
        """Identifies the vocabulary (its words in order), so that an embedding matrix or a trained
        model is never used with another one."""
        return hashlib.sha1("\n".join(self.words).encode()).hexdigest()[:16]

    @property
    def sequence_length(self):
        """Length of an encoded caption: the words plus <start> and <end>."""
        return self.max_length + 2

    def encode(self, caption):
        """`<start> w1 ... wn <end>` as ids, cut to `max_length` words, unknown words as <unk>."""
        ids = [self.index.get(w, self.unk_id) for w in caption.split()[:self.max_length]]
        return [self.start_id, *ids, self.end_id]

    def decode(self, ids):
        """Words up to the first <end>, without <start> and padding."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i not in (self.pad_id, self.start_id):
                words.append(self.words[i])
        return " ".join(words)

    def save(self, path):
        write_json(path, {"words": self.words, "max_length": self.max_length})

    @classmethod
    def load(cls, path):
        data = read_json(require(path, "01_prepare_captions"))
        length = data.get("max_length") if isinstance(data, dict) else None
        if not (type(length) is int and 1 <= length <= MAX_CAPTION_WORDS):
            raise CaptionFileError(f"{path}: max_length {length!r} is not a caption length (1 to "
                                   f"{MAX_CAPTION_WORDS} words); run notebook 01 again")
        words = data.get("words")
        if not isinstance(words, list) or tuple(words[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise CaptionFileError(f"{path}: 'words' is not a list that starts with "
                                   f"{', '.join(SPECIAL_TOKENS)}; run notebook 01 again")
        for i, word in enumerate(words[len(SPECIAL_TOKENS):], len(SPECIAL_TOKENS)):
            if not (isinstance(word, str) and word.isalpha()):  # as clean_caption keeps words
                raise CaptionFileError(f"{path}: word {i} ({str(word)[:40]!r}) is not a word of "
                                       "letters, as notebook 01 writes them")
        if len(set(words)) != len(words):
            raise CaptionFileError(f"{path}: a word is in it twice; run notebook 01 again")
        return cls(words, length)


def build_vocabulary(captions, min_count=10, max_length_cap=None):
    """Words seen at least `min_count` times in `captions` (cleaned training captions).

    Ordered by frequency (ties alphabetically) so ids are stable from run to run.
    """
    counts = Counter(w for c in captions for w in c.split())
    kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    longest = max((len(c.split()) for c in captions), default=0)
    max_length = min(longest, max_length_cap) if max_length_cap else longest
    return Vocabulary([*SPECIAL_TOKENS, *kept], max_length)
