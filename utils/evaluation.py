"""Stage 5: `evaluate`, the one evaluation of notebook 05 and the quality benchmark, its file, and a
run's scores as the app shows them (`describe_run`).

It decodes a split with each decoding setting, scores the captions as the papers do
(`utils.metrics`), diagnoses them, and decodes the split again with the images shuffled as a
control. Each decoding's outcome is one `DecodingResult`; the results file, named after the split
and the decodings, holds them and is read back as an `Evaluation`.
"""
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .decoding import DecodingSetting, decode
from .files import read_json, write_json
from .metrics import caption_diagnostics, caption_scores
from .record import FeatureKind
from .runs import read_run

__all__ = ["DecodingResult", "Evaluation", "evaluate", "find_result", "EVALUATION_FORMAT",
           "evaluation_path", "write_evaluation", "read_evaluation", "read_evaluations",
           "SAMPLE_RUN_WARNING", "RunSummary", "describe_run"]

EVALUATION_FORMAT = 2  # of evaluation-<split>-<decodings>.json


@dataclass(frozen=True)
class DecodingResult:
    """A split decoded with one setting, and scored: a row of notebook 05's table."""
    decoding: DecodingSetting
    shuffled_images: bool     # the control: each image decoded from another image's features
    scores: dict              # metric ("bleu4", "cider_d", ...) -> score; None: not computed
    missing: dict             # metric -> why it was not computed
    diagnostics: dict         # distinct captions, share copied from training, mean length...
    captions: dict            # image name -> its caption
    cider_d_per_image: dict   # image name -> its caption's CIDEr-D

    @property
    def label(self):
        """"beam 5, length penalty 1, no repeated 2-gram", ", shuffled images" for the control."""
        return self.decoding.label + (", shuffled images" if self.shuffled_images else "")

    def to_json(self):
        return {"label": self.label, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data):
        fields = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        return cls(**fields | {"decoding": DecodingSetting(**data["decoding"])})


@dataclass(frozen=True)
class Evaluation:
    """One evaluation file of notebook 05: a split of a run, decoded with several settings."""
    run: str
    split: str                      # "test", "val", "train", or the file of image names
    images: int                     # images decoded
    results: list                   # [DecodingResult], the shuffled-image control last

    def result(self, setting, shuffled_images=False):
        return find_result(self.results, setting, shuffled_images)


def evaluate(decoder, names, features, references, settings, training_captions, control=None,
             meteor=True, verbose=True):
    """Caption the images `names` (their feature vectors `features`) with each DecodingSetting,
    score the captions against `references` (per image, its raw reference sentences) and
    diagnose them against `training_captions`. With `control`, a setting, the images are also
    decoded with their feature vectors shuffled among them (seeded): a model that looks at the
    images must score well above that. Returns one entry per decoding, control last, each with
    every caption and every image's CIDEr-D."""
    jobs = [(setting, features, False) for setting in settings]
    if control is not None:
        shuffled = features[np.random.default_rng(0).permutation(len(features))]
        jobs.append((control, shuffled, True))
    # Progress that stays in a saved notebook, as a widget would not: scoring runs Java and takes
    # seconds to minutes, so a line says what runs before it runs.
    say = print if verbose else (lambda *args, **kwargs: None)
    results = []
    for i, (setting, images, shuffled_images) in enumerate(jobs, 1):
        label = setting.label + (", shuffled images" if shuffled_images else "")
        say(f"[{i}/{len(jobs)}] {label}: decoding {len(images)} images, then scoring them (PTB "
            "tokenizer and METEOR on Java, BLEU, ROUGE-L, CIDEr-D)...", flush=True)
        started = time.perf_counter()
        hypotheses = [caption.text.split() for caption in decode(decoder, images, setting)]
        decoded = time.perf_counter()
        scores, missing, each_cider = caption_scores(references, [" ".join(h) for h in hypotheses],
                                                     meteor, per_image=True)
        say(f"    decoded in {decoded - started:.1f} s, scored in "
            f"{time.perf_counter() - decoded:.1f} s", flush=True)
        results.append(DecodingResult(
            setting, shuffled_images, scores, missing,
            caption_diagnostics(hypotheses, training_captions),
            dict(zip(names, map(" ".join, hypotheses))), dict(zip(names, each_cider))))
    return results


def find_result(results, setting, shuffled_images=False):
    """The DecodingResult of `results` for one DecodingSetting (and the control or not)."""
    for result in results:
        if (result.decoding, result.shuffled_images) == (setting, shuffled_images):
            return result
    raise KeyError(f"no result for {setting.label}{', shuffled images' if shuffled_images else ''}")


def evaluation_path(run_dir, split, settings):
    """Where notebook 05 keeps the evaluation of a split (a name, or a file of image names) with
    these decoding settings: a second evaluation with other settings never replaces the first."""
    decodings = "_".join(setting.slug for setting in settings)
    return Path(run_dir) / f"evaluation-{Path(str(split)).stem}-{decodings}.json"


def write_evaluation(run_dir, split, results, images):
    """`results` of `evaluate` in the file named after the split and their decodings."""
    path = evaluation_path(run_dir, split, [r.decoding for r in results if not r.shuffled_images])
    write_json(path, {"format_version": EVALUATION_FORMAT, "run": str(run_dir),
                      "split": str(split), "images": images,
                      "results": [result.to_json() for result in results]})
    return path


def read_evaluation(run_dir, split):
    """The newest Evaluation of a split written by notebook 05, or None if there is none."""
    stem = Path(str(split)).stem
    # This split's files, and the one an older notebook 05 wrote (to say so), not another split's
    # whose name starts with this one's.
    found = sorted([*Path(run_dir).glob(f"evaluation-{stem}-*.json"),
                    *Path(run_dir).glob(f"evaluation-{stem}.json")], key=lambda p: p.stat().st_mtime)
    return _checked_evaluation(found[-1]) if found else None


def read_evaluations(run_dir):
    """{split: its newest evaluation} for every split notebook 05 evaluated in `run_dir` (a split
    is a name, or the file of image names it read). The newest file that is not an evaluation
    is an error naming it; one older than a good evaluation was replaced by it, and is passed."""
    newest = {}
    for path in sorted(Path(run_dir).glob("evaluation-*.json"), key=lambda p: -p.stat().st_mtime):
        try:
            evaluation = _checked_evaluation(path)
        except ValueError:
            if not newest:
                raise
            continue
        newest.setdefault(evaluation.split, evaluation)
    return newest


def _checked_evaluation(path):
    """An evaluation file's content, refused with its name unless it has the fields read here."""
    try:
        data = read_json(path)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not JSON ({e}); run notebook 05 again, or delete it") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not an evaluation (a JSON object); run notebook 05 again, or "
                         "delete it")
    if "format_version" not in data and "scores" in data:
        raise ValueError(f"{path}: written by an older notebook 05; run notebook 05 again")
    if data.get("format_version") != EVALUATION_FORMAT:
        raise ValueError(f"{path}: not an evaluation this code reads (format "
                         f"{data.get('format_version')!r}); run notebook 05 again, or delete it")
    try:
        evaluation = Evaluation(data["run"], data["split"], data["images"],
                                [DecodingResult.from_json(entry) for entry in data["results"]])
        assert isinstance(evaluation.split, str) and isinstance(evaluation.images, int)
        for result in evaluation.results:
            assert isinstance(result.shuffled_images, bool)
            assert all(isinstance(result.scores[s], (int, float)) for s in ("bleu4", "cider_d"))
    except (AssertionError, KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: an evaluation without the split, images, decodings and BLEU-4 "
                         "and CIDEr-D of each; run notebook 05 again, or delete it") from None
    return evaluation


# What the app says of a run trained on the synthetic sample, whose scores look excellent.
SAMPLE_RUN_WARNING = ("Trained on the synthetic sample: it knows only coloured shapes, whatever "
                      "the photo.")
SPLIT_ORDER = ("test", "val", "train")  # how the evaluations of a run are listed


@dataclass(frozen=True)
class RunSummary:
    """What the app shows of a run: a line on what it is, and its scores as a table."""
    name: str
    about: str                  # architecture, dataset, encoder, vocabulary, training images
    sample: bool                # trained on the synthetic sample: it knows only coloured shapes
    scores: list                # one row a decoding and split: {"decoding", "split", "BLEU-4", ...}
    note: str = None            # why there are no scores, or which evaluation file is unreadable


def describe_run(run_dir):
    """The RunSummary of a run: its data, encoder and vocabulary, and the COCO-evaluation scores
    of each split notebook 05 evaluated, labelled by split (the shuffled-image control left out:
    it is for the notebook)."""
    run_dir = Path(run_dir)
    config = read_run(run_dir)[1]
    source = config.features
    made_by = f"{source.encoder} features ({source.weights} weights)" if source.encoder else ""
    if source.kind == FeatureKind.EXTERNAL:
        made_by = f"{made_by or 'features'} given in a file"
    about = (f"{config.model.architecture} model, {config.dataset} dataset, {made_by}, "
             f"{config.model.vocab_size:,} words, trained on {config.data.train.images:,} images")
    summary = RunSummary(run_dir.name, about, config.dataset == "sample", [])
    try:
        evaluations = read_evaluations(run_dir)
    except ValueError as e:
        return dataclasses.replace(summary, note=str(e))
    order = {split: i for i, split in enumerate(SPLIT_ORDER)}
    rows = [{"decoding": result.label,
             "split": split if split in order else f"{Path(split).name} ({evaluation.images})",
             "BLEU-4": round(result.scores["bleu4"], 3),
             "METEOR": None if result.scores.get("meteor") is None
             else round(result.scores["meteor"], 3),
             "CIDEr-D": round(result.scores["cider_d"], 3)}
            for split, evaluation in sorted(evaluations.items(),
                                            key=lambda e: (order.get(e[0], len(order)), e[0]))
            for result in evaluation.results if not result.shuffled_images]
    return dataclasses.replace(summary, scores=rows, note=None if rows else
                               "not evaluated yet: run notebook 05 for its scores")
