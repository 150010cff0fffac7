import json
import warnings

import pytest

import utils

BOGUS = "2258277193_586949ec62.jpg.1"


# --- the real Flickr8k files ------------------------------------------------------------------

def test_real_token_file_counts(shared_flickr8k):
    cf = utils.read_captions(shared_flickr8k / "Flickr8k.token.txt")
    assert cf.format == "flickr_token"
    assert len(cf.captions) == 8090
    assert sum(len(c) for c in cf.captions.values()) == 40450
    assert all(len(c) == 5 for c in cf.captions.values())
    assert BOGUS in cf.captions and cf.malformed == []
    assert not any("\r" in c for caps in cf.captions.values() for c in caps)
    assert cf.captions["1000268201_693b08cb0e.jpg"][0] == (
        "A child in a pink dress is climbing up a set of stairs in an entry way .")


def test_real_kaggle_csv_with_quoted_commas(shared_flickr8k):
    cf = utils.read_captions(shared_flickr8k / "captions.txt")
    assert cf.format == "kaggle_csv"
    assert len(cf.captions) == 1000
    assert sum(len(c) for c in cf.captions.values()) == 5000
    assert cf.captions["1012212859_01547e3f17.jpg"][0] == (
        "A dog shakes its head near the shore , a red ball next to it .")


def test_kaggle_and_token_files_agree(shared_flickr8k):
    token = utils.read_captions(shared_flickr8k / "Flickr8k.token.txt").captions
    kaggle = utils.read_captions(shared_flickr8k / "captions.txt").captions
    assert all(token[name] == caps for name, caps in kaggle.items())


def test_real_official_splits(shared_flickr8k):
    _, _, split_files = utils.find_dataset_files(shared_flickr8k)
    sizes = {s: len(utils.read_split_file(p)) for s, p in split_files.items()}
    assert sizes == {"train": 5997, "val": 1000, "test": 1000}


def test_prepare_real_subset_keeps_only_images_on_disk(shared_flickr8k):
    images_dir, captions_file, split_files = utils.find_dataset_files(shared_flickr8k)
    with pytest.warns(UserWarning, match="7215 image"):
        prepared, report = utils.prepare_dataset(captions_file, images_dir, split_files)
    assert report["images_per_split"] == {"train": 753, "val": 113, "test": 0}
    assert len(report["missing_images"]) == 8090 - 875 and BOGUS in report["missing_images"]
    assert report["split_names_without_captions"] == [] and BOGUS not in prepared.images
    info = prepared.images["1000268201_693b08cb0e.jpg"]
    assert info["split"] == "train" and len(info["captions"]) == 5
    assert info["references"][0][:4] == ["a", "child", "in", "a"]


def test_crlf_and_lf_read_the_same(shared_flickr8k, tmp_path):
    crlf = shared_flickr8k / "Flickr8k.token.txt"
    lf = tmp_path / "renamed.txt"  # also checks that detection is by content, not by name
    lf.write_bytes(crlf.read_bytes().replace(b"\r\n", b"\n"))
    assert utils.read_captions(lf).captions == utils.read_captions(crlf).captions


# --- the other formats, written by the tests --------------------------------------------------

def test_flickr30k_results_csv(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("image_name| comment_number| comment\n"
                    "1000092795.jpg| 0| Two young guys with shaggy hair look at their hands .\n"
                    "1000092795.jpg| 1| Two young , White males are outside near many bushes .\n"
                    "2199200615.jpg| 4 A dog runs across the grass .\n"  # the real file's odd line
                    "garbage line without separators\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="results.csv: skipped 1 of 4 captions"):
        cf = utils.read_captions(path)
    assert cf.format == "flickr30k_csv"
    assert cf.captions["1000092795.jpg"][1] == "Two young , White males are outside near many bushes ."
    assert cf.captions["2199200615.jpg"] == ["A dog runs across the grass ."]
    assert cf.malformed == [f"{path}:5: expected image_name| comment_number| comment"]


def test_karpathy_json_with_splits(tmp_path):
    data = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "test",
         "sentences": [{"raw": "A cat.", "tokens": ["a", "cat"]}]},
        {"filepath": "train2014", "filename": "b.jpg", "split": "restval",
         "sentences": [{"raw": "A dog.", "tokens": ["a", "dog"]}, {"raw": "Dog!", "tokens": []}]},
        {"filename": "c.jpg", "split": "train", "sentences": [{"raw": "Birds."}]},
        {"split": "val"}]}
    path = tmp_path / "whatever.json"
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"images\[3\]"):
        cf = utils.read_captions(path)
    assert cf.format == "karpathy_json"
    assert cf.captions == {"val2014/a.jpg": ["A cat."], "train2014/b.jpg": ["A dog.", "Dog!"],
                           "c.jpg": ["Birds."]}
    assert cf.splits == {"test": ["val2014/a.jpg"], "train": ["train2014/b.jpg", "c.jpg"]}


# --- bad input --------------------------------------------------------------------------------

def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        utils.read_captions(tmp_path / "nope.txt")


def test_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "Flickr8k.token.txt"
    path.write_bytes(b"a.jpg#0\tA cat .\nb.jpg#0\tA caf\xe9 .\n")
    with pytest.raises(utils.CaptionFileError, match=r"Flickr8k.token.txt:2: not UTF-8"):
        utils.read_captions(path)


def test_malformed_lines_are_reported_and_good_ones_kept(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("a.jpg#0\tA cat .\nb.jpg#0 no tab here\n\nc.jpg#x\tbad number\nd.jpg#1\tA dog .\n")
    with pytest.warns(UserWarning, match="skipped 2 of 4 captions"):
        cf = utils.read_captions(path)
    assert cf.captions == {"a.jpg": ["A cat ."], "d.jpg": ["A dog ."]}
    assert [m.split(": ")[0] for m in cf.malformed] == [f"{path}:2", f"{path}:4"]


def test_unknown_format_and_empty_file_are_errors(tmp_path):
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello world\n")
    with pytest.raises(utils.CaptionFileError, match="notes.txt:1: not a caption file"):
        utils.read_captions(unknown)
    bad_json = tmp_path / "dataset.json"
    bad_json.write_text('{"images": [\n  {"filename": }\n]}')
    with pytest.raises(utils.CaptionFileError, match="dataset.json:2: invalid JSON"):
        utils.read_captions(bad_json)


def test_all_lines_malformed_is_an_error(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("image,caption\nonly-a-name\n")
    with warnings.catch_warnings(), pytest.raises(utils.CaptionFileError, match="no caption"):
        warnings.simplefilter("ignore")
        utils.read_captions(path)


# --- cleaning ---------------------------------------------------------------------------------

def test_clean_caption():
    assert utils.clean_caption("A  black-and-white dog's 2 balls, in 3rd place!") == (
        "a black and white dogs balls in place")
    assert utils.clean_caption("A dog runs .", drop_one_letter=True) == "dog runs"
    assert utils.clean_caption(" \t. ! ") == ""


def test_references_keep_digits_and_one_letter_words():
    assert utils.tokenize("Two dogs, 2 balls: a dog's toy.") == [
        "two", "dogs", "2", "balls", "a", "dogs", "toy"]


# --- splits -----------------------------------------------------------------------------------

def test_seeded_split_is_deterministic_and_disjoint():
    names = [f"{i}.jpg" for i in range(100)]
    split = utils.seeded_split(names, 0.1, 20, seed=3)
    assert split == utils.seeded_split(list(reversed(names)), 0.1, 20, seed=3)
    assert [len(split[s]) for s in ("train", "val", "test")] == [70, 10, 20]
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(names)
    assert split != utils.seeded_split(names, 0.1, 20, seed=4)
    with pytest.raises(ValueError, match="no training images"):
        utils.seeded_split(names, 50, 50)


def test_seeded_split_is_used_without_split_files(tmp_path):
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(20):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(b"x")
        lines.append(f"{i}.jpg,A cat number {i} .")
    (tmp_path / "captions.txt").write_text("image,caption\n" + "\n".join(lines) + "\nghost.jpg,Gone .\n")
    with pytest.warns(UserWarning, match="1 image"):
        prepared, report = utils.prepare_dataset(tmp_path / "captions.txt", tmp_path / "img",
                                                 val_size=4, test_size=4, seed=1)
    assert report["images_per_split"] == {"train": 12, "val": 4, "test": 4}
    assert report["missing_images"] == ["ghost.jpg"]
    assert prepared.images["3.jpg"]["captions"] == ["a cat number"]
    assert prepared.images["3.jpg"]["references"] == [["a", "cat", "number", "3"]]


# --- vocabulary -------------------------------------------------------------------------------

CAPTIONS = ["a dog runs", "a dog jumps", "a cat sleeps on a mat", "a dog"]


def test_build_vocabulary_threshold_and_order():
    vocab = utils.build_vocabulary(CAPTIONS, min_count=2)
    assert vocab.words == ["<pad>", "<unk>", "<start>", "<end>", "a", "dog"]
    assert (vocab.pad_id, vocab.unk_id, vocab.start_id, vocab.end_id) == (0, 1, 2, 3)
    assert vocab.max_length == 6
    assert utils.build_vocabulary(CAPTIONS, min_count=1, max_length_cap=4).max_length == 4


def test_encode_decode_round_trip():
    vocab = utils.build_vocabulary(CAPTIONS, min_count=1)
    ids = vocab.encode("a dog sleeps on a mat")
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert vocab.decode(ids) == "a dog sleeps on a mat"
    assert vocab.decode(vocab.encode("a zebra runs")) == "a <unk> runs"
    assert vocab.decode([vocab.start_id, 4, vocab.end_id, 5, 0]) == vocab.words[4]
    capped = utils.build_vocabulary(CAPTIONS, min_count=1, max_length_cap=2)
    assert capped.encode("a dog runs") == [2, capped.index["a"], capped.index["dog"], 3]


def test_vocabulary_saves_as_json(tmp_path):
    vocab = utils.build_vocabulary(CAPTIONS, min_count=1)
    vocab.save(tmp_path / "vocabulary.json")
    data = json.loads((tmp_path / "vocabulary.json").read_text())
    assert data["words"][:4] == ["<pad>", "<unk>", "<start>", "<end>"]
    assert utils.Vocabulary.load(tmp_path / "vocabulary.json") == vocab
    with pytest.raises(ValueError, match="starts with"):
        utils.Vocabulary(["a", "b"], 3)


def kaggle_file(tmp_path, lines):
    (tmp_path / "img").mkdir(exist_ok=True)
    for name in {line.split(",")[0] for line in lines}:
        (tmp_path / "img" / name).write_bytes(b"x")
    path = tmp_path / "captions.txt"
    path.write_text("image,caption\n" + "\n".join(lines) + "\n")
    return path


def test_an_unbalanced_quote_swallows_nothing(tmp_path):
    """One open quote once turned the other 49 captions into one field of the first record."""
    lines = [f"{i}.jpg,A dog number {i} runs ." for i in range(50)]
    lines[1] = '1.jpg,"A dog number 1 runs .'
    cf = utils.read_captions(kaggle_file(tmp_path, lines))
    assert cf.records == 50 and sum(len(c) for c in cf.captions.values()) == 50
    assert cf.captions["1.jpg"] == ["A dog number 1 runs ."] and cf.malformed == []
    assert cf.notes == [f"{tmp_path / 'captions.txt'}:3: an unbalanced quote, read as this line alone"]


def test_a_huge_caption_or_field_is_skipped_by_line_and_cannot_blow_max_length(tmp_path):
    lines = [f"{i}.jpg,A dog number {i} runs ." for i in range(10)]
    lines[3] = "3.jpg," + "dog " * 2_000_000  # once max_length 2,000,000
    lines[4] = "4.jpg," + "a " * 2_000
    lines[5] = '5.jpg,"' + "x" * 200_000 + '"'  # over the csv module's 131,072: once a raw error
    path = kaggle_file(tmp_path, lines)
    with pytest.warns(UserWarning, match="skipped 3 of 10 captions"):
        cf = utils.read_captions(path)
    assert cf.malformed == [f"{path}:5: a line of 8,000,006 characters, over 10,000",
                            f"{path}:6: a caption of 2,000 words, over 100",
                            f"{path}:7: a line of 200,008 characters, over 10,000"]
    with pytest.warns(UserWarning):
        prepared, report = utils.prepare_dataset(path, tmp_path / "img", val_size=2, test_size=2)
    assert report["captions_read"] == 10 and report["captions_kept"] == 7
    vocab = utils.build_vocabulary(utils.split_captions(prepared, "train"), min_count=1)
    assert vocab.max_length == 4  # "a dog number runs": tokens with digits are cleaned away


def test_empty_and_repeated_captions_are_reported(tmp_path):
    lines = ["a.jpg,A cat .", "a.jpg,A cat .", "a.jpg,!!! ...", "b.jpg,Two dogs .",
             "c.jpg,A bird .", "d.jpg,A fish ."]
    path = kaggle_file(tmp_path, lines)
    with pytest.warns(UserWarning, match="1 caption\\(s\\) empty after cleaning"):
        prepared, report = utils.prepare_dataset(path, tmp_path / "img", val_size=1, test_size=1)
    assert report["notes"] == [f"{path}:3: the same caption of a.jpg as line 2, kept"]
    assert report["empty_after_cleaning"] == ["a.jpg: '!!! ...'"]
    assert report["captions_read"] == 6 and report["captions_kept"] == 5


def test_karpathy_unknown_split_and_repeated_entry_are_reported(tmp_path):
    images = [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "A cat ."}]},
              {"filename": "b.jpg", "split": "holdout", "sentences": [{"raw": "A dog ."}]},
              {"filename": "a.jpg", "split": "test", "sentences": [{"raw": "A cat again ."}]},
              {"filename": "c.jpg", "split": "restval", "sentences": [{"raw": "A bird ."}]}]
    path = tmp_path / "dataset_flickr8k.json"
    path.write_text(json.dumps({"images": images}))
    with pytest.warns(UserWarning, match="skipped 2 of 4 captions"):
        cf = utils.read_captions(path)
    assert cf.malformed == [f"{path}: images[1]: unknown split 'holdout' (train, restval, val or test)",
                            f"{path}: images[2]: a.jpg again (first at images[0])"]
    assert cf.splits == {"train": ["a.jpg", "c.jpg"]}


def test_image_names_cannot_leave_the_images_folder(tmp_path):
    """A caption file naming /etc/hostname or ../../x is refused line by line, never read."""
    (tmp_path / "img").mkdir()
    (tmp_path / "outside.jpg").write_bytes(b"not for us")
    lines = ["a.jpg,A cat .", "/etc/hostname,A host .", "../outside.jpg,A way out .",
             "sub/../../outside.jpg,Another way out ."]
    path = tmp_path / "captions.txt"  # written here: kaggle_file would make the files it names
    path.write_text("image,caption\n" + "\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="skipped 3 of 4 captions"):
        cf = utils.read_captions(path)
    assert list(cf.captions) == ["a.jpg"]
    assert cf.malformed[0] == (f"{path}:3: image name '/etc/hostname' points outside the images "
                               "folder")
    images = [{"filename": "/etc/hostname", "split": "train", "sentences": [{"raw": "A host ."}]},
              {"filepath": "..", "filename": "outside.jpg", "split": "train",
               "sentences": [{"raw": "Out ."}]},
              {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "A cat ."}]}]
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"images": images}))
    with pytest.warns(UserWarning, match="skipped 2 of 3 captions"):
        assert list(utils.read_captions(karpathy).captions) == ["a.jpg"]


def test_a_json_nested_too_deeply_is_a_caption_file_error(tmp_path):
    path = tmp_path / "dataset_coco.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(utils.CaptionFileError, match="dataset_coco.json: JSON nested too deeply"):
        utils.read_captions(path)


@pytest.mark.parametrize("separator", ["\u2028", "\x85", "\x0c", "\u2029", "\x1c"])
def test_a_caption_is_cut_only_at_a_line_feed(separator, tmp_path):
    lines = [f"a.jpg#0\tA dog{separator}runs on the grass .", "a.jpg#1\tA dog runs ."]
    path = tmp_path / "Flickr8k.token.txt"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    cf = utils.read_captions(path)
    assert cf.records == 2 and cf.malformed == []
    assert utils.clean_caption(cf.captions["a.jpg"][0]) == "a dog runs on the grass"


def test_split_images_says_what_a_split_can_be(tmp_path):
    prepared = utils.PreparedDataset("img", {
        "a.jpg": {"split": "train"}, "b.jpg": {"split": "test"}, "c.jpg": {"split": "test"}}, {})
    assert utils.split_images(prepared, "test", ["a.jpg", "b.jpg"]) == (["b.jpg"], ["c.jpg"])
    listed = tmp_path / "my_images.txt"
    listed.write_text("a.jpg\nz.jpg\n")
    assert utils.split_images(prepared, str(listed), ["a.jpg"]) == (["a.jpg"], ["z.jpg"])
    with pytest.raises(ValueError, match=r"SPLIT = 'my_images.txt' is neither a split of this "
                                         r"dataset \(test, train\) nor a file of image names"):
        utils.split_images(prepared, "my_images.txt", ["a.jpg"])
    with pytest.raises(ValueError, match="none of the 2 images of test has both features and "
                                         "captions: nothing to caption"):
        utils.split_images(prepared, "test", ["a.jpg"])
