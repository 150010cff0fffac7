"""A run's record: what a run is, in one typed shape, read and checked without TensorFlow.

A run folder's `config.json` is a `RunConfig`, written when training starts and rebuilt from the
file by `RunConfig.load`, as nanoGPT rebuilds `GPTConfig(**checkpoint[...])`. It says where the
features came from (`FeatureSource`: encoder, weights, input size, what a new photo must go
through again), the model's shape (`ModelConfig`), how it was trained (`TrainingConfig`), which
vocabulary it speaks and on what data (`DataCounts`). A field with a closed set of values is an
enum; every value is checked when a record is made, from a notebook's parameters or from a file,
so that a misspelt setting is refused before anything is trained. The code that reads the record
(building the model, training it) imports it from here; nothing here imports TensorFlow.
"""
import dataclasses
import types
from dataclasses import dataclass, field
from enum import StrEnum

from .files import read_json, write_json

__all__ = ["FORMAT_VERSION", "RunConfigError", "FeatureKind", "FeatureSource", "ModelConfig",
           "Baseline", "TrainingConfig", "SplitCount", "DataCounts", "RunConfig",
           "config_from_parameters", "ADDED_LATER"]

FORMAT_VERSION = 1  # of config.json; files without one were written before run records (v0)


class RunConfigError(ValueError):
    """A config.json that cannot be read as a run record; the message names the file and field."""


class FeatureKind(StrEnum):
    """Who made a run's features."""
    CACHE = "cache"           # notebook 02, whose encoder a run can rebuild
    EXTERNAL = "external"     # elsewhere: an .npz of names and features


@dataclass(frozen=True)
class FeatureSource:
    """What made a run's features, as its record keeps it: enough to encode a new photo exactly
    like the training ones, or to say why that cannot be done. Two sources are the same when
    their features are (what made them, and their content's fingerprint), wherever they lay."""
    kind: FeatureKind
    path: str = field(compare=False)  # where they lay, relative to the repository: a hint only
    dim: int                  # feature size
    encoder: str = None       # the rest for a cache, or an .npz whose encoder is declared: ENCODERS key...
    weights: str = None       # ...`weights_tag` of its weights...
    input_size: int = None    # ...and the square input size it read images at
    fingerprint: str = None   # `features_fingerprint` of the table (None in records before it)

    def __post_init__(self):
        object.__setattr__(self, "kind", FeatureKind(self.kind))  # as read from JSON: a string


@dataclass(frozen=True)
class ModelConfig:
    """The model's shape: everything `utils.build_caption_model` needs."""
    vocab_size: int               # words, special tokens included
    feature_dim: int              # size of one image's feature vector
    architecture: str = "merge"   # one of utils.ARCHITECTURES (an open set: a class registers)
    embedding_dim: int = 50       # word vector size (the GloVe matrix's, when one is given)
    units: int = 256              # image projection, LSTM and decoder sizes
    dropout: float = 0.5          # on the image features and on the embedded words
    train_embedding: bool = True  # fine-tune the (GloVe) embedding too
    positions: int = None         # grid positions an image has (rows x columns); None: pooled
    attention_regularization: float = 1.0  # attention: weight of the doubly stochastic term
    blocks: int = 2               # transformer: decoder blocks
    heads: int = 4                # transformer: attention heads of a block (units / heads each)
    memory_slots: int = 4         # transformer on pooled features: positions the image becomes

    @property
    def reads_grid(self):
        """Whether the model reads a grid of positions [images, positions, dim] an image (its
        architecture's class says whether it may: utils.build_caption_model checks)."""
        return self.positions is not None

    @property
    def image_shape(self):
        """One image's features as the model reads them."""
        return (self.positions, self.feature_dim) if self.reads_grid else (self.feature_dim,)


class Baseline(StrEnum):
    """What a sampled caption's reward is compared with in self-critical training."""
    SAMPLES = "samples"   # the mean reward of the image's other samples ("new self-critical")
    GREEDY = "greedy"     # the reward of the image's greedy caption (Rennie et al. 2017)


@dataclass(frozen=True)
class TrainingConfig:
    """How a model is trained. The defaults are notebook 04's (tested)."""
    epochs: int = 50                # at most: early stopping usually ends training first
    batch_size: int = 64            # captions per batch
    learning_rate: float = 1e-3     # Adam's
    lr_plateau_factor: float | None = 0.5  # x the learning rate after an epoch without progress
    label_smoothing: float = 0.1    # share of each target spread over the whole vocabulary
    patience: int = 4               # early stopping, in epochs without progress (min_gain)
    min_gain: float = 0.005         # the least fall of validation loss that counts as progress
    seed: int = 0                   # initial weights, dropout and the order of batches
    mixed_precision: bool = False   # float16 compute (GPU)
    xla: bool = False               # compile the training step with XLA
    # The second phase, self-critical training (utils.self_critical), after the first's best epoch.
    self_critical_epochs: int = 0             # its epochs; 0: no second phase
    self_critical_learning_rate: float = 5e-5  # Adam's, in the second phase
    self_critical_samples: int = 5            # captions sampled per image and step
    self_critical_baseline: Baseline = Baseline.SAMPLES  # what a sample's reward is compared with
    # Distillation (utils.distillation): finished runs teach this one, as one ensemble.
    teachers: tuple = ()                   # their weights' digests (utils.weights_digest), in order
    distillation_weight: float = 0.0       # share of each word's loss taken from the teachers'
                                           # next-word distribution (word level); 0: none
    distillation_temperature: float = 1.0  # both distributions flattened by it (Hinton et al.)
    distillation_top_k: int = 16           # the teachers' likeliest words kept at each position
    teacher_captions: bool = False         # their captions of the training photos as one more
                                           # reference each (sequence level)

    def __post_init__(self):
        """The second phase's settings, checked now: a misspelt one would otherwise be found
        only when that phase starts, after the whole first phase has trained."""
        try:
            object.__setattr__(self, "self_critical_baseline", Baseline(self.self_critical_baseline))
        except ValueError:
            raise ValueError(f"unknown self-critical baseline {self.self_critical_baseline!r}; "
                             f"choose one of {', '.join(Baseline)}") from None
        if self.self_critical_epochs < 0 or self.self_critical_learning_rate <= 0:
            raise ValueError("self-critical epochs must be 0 or more, its learning rate above 0")
        self._check_distillation()
        least = 2 if self.self_critical_baseline == Baseline.SAMPLES else 1
        if self.self_critical_samples < least:
            raise ValueError(f"the {self.self_critical_baseline} baseline needs at least {least} "
                             f"samples an image, not {self.self_critical_samples}")

    def _check_distillation(self):
        """Teachers with nothing to teach, or teaching without teachers, refused by name."""
        object.__setattr__(self, "teachers", tuple(self.teachers))  # as read from JSON: a list
        teaching = self.distillation_weight > 0 or self.teacher_captions
        if self.teachers and not teaching:
            raise ValueError("teachers are given, but neither a distillation weight above 0 (word "
                             "level) nor teacher captions (sequence level): set one or both")
        if teaching and not self.teachers:
            raise ValueError("a distillation weight or teacher captions need teachers: the run "
                             "folders whose ensemble teaches this run")
        if not 0 <= self.distillation_weight <= 1:
            raise ValueError(f"the distillation weight is a share, 0 to 1, not "
                             f"{self.distillation_weight}")
        if self.distillation_temperature <= 0 or self.distillation_top_k < 1:
            raise ValueError("the distillation temperature must be above 0, its top k 1 or more")


@dataclass(frozen=True)
class SplitCount:
    """How much of one split a run trained or validated on."""
    images: int
    captions: int

    def __str__(self):
        return f"{self.captions:,} captions of {self.images:,} images"


@dataclass(frozen=True)
class DataCounts:
    """The run record's `data`: what each split held."""
    train: SplitCount
    val: SplitCount


@dataclass(frozen=True)
class RunConfig:
    """Everything about a run but its weights and its vocabulary (saved beside it)."""
    dataset: str                # the DATASET its captions came from (data/<dataset>/)
    features: FeatureSource     # what made its image features
    vocabulary: str             # fingerprint of vocabulary.json, checked on loading
    embedding: dict             # the initial word vectors: notebook 03's source, dim and oov rule
    model: ModelConfig
    training: TrainingConfig
    data: DataCounts            # images and captions of its train and val splits
    format_version: int = FORMAT_VERSION

    def save(self, path):
        write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path, vocab=None):
        """The record in `path`; a file from before format 1 is upgraded (it needs the run's
        `vocab` for the fingerprint it lacks)."""
        data = read_json(path)
        if not isinstance(data, dict):
            raise RunConfigError(f"{path}: not a run record (a JSON object)")
        version = data.get("format_version")
        if version is None:
            data = _upgrade_v0(data, vocab, path)
        elif version != FORMAT_VERSION:
            raise RunConfigError(f"{path}: format version {version}, this code reads "
                                 f"{FORMAT_VERSION}; update the repository (git pull)")
        record = _record(cls, data, path)
        weights = record.features.weights
        if record.features.kind == FeatureKind.CACHE and not (
                weights in ("random", "imagenet") or str(weights).startswith("file-")):
            raise RunConfigError(f"{path}: field 'features.weights' is {weights!r}, not random, "
                                 "imagenet or file-<digest>")
        return record


def config_from_parameters(config_class, parameters, **measured):
    """A config record (ModelConfig, TrainingConfig) from a notebook's parameters: each field from
    the parameter of its name in upper case (UNITS -> units), unless `measured` gives it (a size
    read off the data, the batch across devices); a field with neither keeps its default. The one
    mapping from parameters to records: notebook 04, the benchmarks and the tests use it."""
    named = {f.name: parameters[f.name.upper()] for f in dataclasses.fields(config_class)
             if f.name.upper() in parameters}
    return config_class(**named | measured)


# Fields added to format 1 after records were written, and what a record without one means: how
# its run was made (a record from before the attention model describes a model without a grid, a
# run from before `min_gain` stopped on any fall of validation loss).
ADDED_LATER = {"model.positions": None, "model.attention_regularization": 1.0,
               "model.blocks": 2, "model.heads": 4, "model.memory_slots": 4,
               "training.min_gain": 0.0, "training.self_critical_epochs": 0,
               "training.self_critical_learning_rate": 5e-5, "training.self_critical_samples": 5,
               "training.self_critical_baseline": "samples", "features.fingerprint": None,
               "training.teachers": [], "training.distillation_weight": 0.0,
               "training.distillation_temperature": 1.0, "training.distillation_top_k": 16,
               "training.teacher_captions": False}


def _record(cls, data, path, where=""):
    """A dataclass from its dict, refusing unknown and missing fields by name (but those of
    ADDED_LATER, which take the value they had before)."""
    if not isinstance(data, dict):
        raise RunConfigError(f"{path}: field {where.rstrip('.')!r} should be an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            raise RunConfigError(f"{path}: unknown field {where + name!r}")
    values = {}
    for name, field_ in fields.items():
        if name not in data and where + name in ADDED_LATER:
            values[name] = ADDED_LATER[where + name]
        elif name not in data:
            raise RunConfigError(f"{path}: missing field {where + name!r}")
        elif dataclasses.is_dataclass(field_.type):
            values[name] = _record(field_.type, data[name], path, f"{where}{name}.")
        else:
            values[name] = _typed(field_, data[name], path, where + name)
    try:
        return cls(**values)
    except ValueError as e:  # a value the record's type refuses, such as an unknown kind
        raise RunConfigError(f"{path}: field {where.rstrip('.') or cls.__name__!r}: {e}") from None


# What a JSON value of each annotated type may be (a bool is no number, though Python says so).
_JSON_TYPES = {int: lambda v: type(v) is int, float: lambda v: type(v) in (int, float),
               bool: lambda v: type(v) is bool, str: lambda v: type(v) is str,
               dict: lambda v: type(v) is dict,
               tuple: lambda v: type(v) in (list, tuple) and all(type(x) is str for x in v)}


def _typed(field_, value, path, name):
    """`value` if it is of `field_`'s type (None where the field may be None), else the error
    naming the field: a record is never half-checked into a model. An enum's value is a string
    here; whether it is one of the enum's is the record's own check (its __post_init__)."""
    kinds = field_.type.__args__ if isinstance(field_.type, types.UnionType) else (field_.type,)
    if value is None and (type(None) in kinds or field_.default is None):
        return value
    if any(isinstance(value, str) if issubclass(kind, StrEnum) else _JSON_TYPES[kind](value)
           for kind in kinds if kind is not type(None)):
        return value
    wanted = " or ".join(getattr(kind, "__name__", str(kind)) for kind in kinds)
    raise RunConfigError(f"{path}: field {name!r} should be {wanted}, not {type(value).__name__}")


def _upgrade_v0(old, vocab, path):
    """A config.json as notebook 04 wrote it before run records: the same facts, flat."""
    if vocab is None:
        raise RunConfigError(f"{path}: written before run records; load it with its vocabulary")
    try:
        params, external = old["params"], old["weights"] == "external"
        source = (["external", old["features"], old["feature_dim"]] if external else
                  ["cache", old["features"], old["feature_dim"], old["encoder"], old["weights"],
                   old["input_size"]])
        return {
            "dataset": old["dataset"], "features": dataclasses.asdict(FeatureSource(*source)),
            "vocabulary": vocab.fingerprint, "embedding": old["embedding"],
            "model": dataclasses.asdict(ModelConfig(
                old["vocab_size"], old["feature_dim"], "merge", old["embedding"]["dim"],
                params["units"], params["dropout"], params["train_embedding"])),
            # Runs older than these two options trained without them.
            "training": dataclasses.asdict(TrainingConfig(
                **{k: params[k] for k in ("epochs", "batch_size", "learning_rate", "patience",
                                          "seed", "mixed_precision", "xla")},
                lr_plateau_factor=params.get("lr_plateau_factor"),
                label_smoothing=params.get("label_smoothing", 0.0), min_gain=0.0)),
            "data": {"train": old["train"], "val": old["val"]}, "format_version": FORMAT_VERSION}
    except KeyError as e:
        raise RunConfigError(
            f"{path}: written before run records had a format version, and without the field "
            f"{e.args[0]!r} that this code needs: train the run again with notebook 04") from None
