"""Stage 5: incremental decoding agrees with the full model; greedy and beam search are right."""
import itertools

import decoding_oracle as oracle
import keras
import numpy as np
import pytest

import utils
from conftest import model_kinds, split_kind

# The tests every architecture passes (the Transformer on both its memories), each with its own
# first state (CaptionModel.start).
EVERY_ARCHITECTURE = pytest.mark.parametrize("architecture", model_kinds())


# The attention model's grids in these tests: 3x3 positions (a 1x1 grid would make attending
# trivial: every weight 1).
POSITIONS = 9


def random_decoder(n_words, max_length, feature_dim=6, units=8, seed=0, architecture="merge"):
    """A decoder over a randomly initialised model, sharp enough that captions differ."""
    keras.utils.set_random_seed(seed)
    # Up to three words a caption may not end on, for the sampling's rule (utils.BAD_ENDINGS).
    bad = utils.BAD_ENDINGS[:min(3, n_words)]
    words = [*utils.SPECIAL_TOKENS, *bad, *(f"w{i}" for i in range(n_words - len(bad)))]
    vocab = utils.Vocabulary(words, max_length)
    architecture, grid = split_kind(architecture)
    model = utils.build_caption_model(utils.ModelConfig(
        len(vocab), feature_dim, architecture, embedding_dim=5, units=units,
        positions=POSITIONS if grid else None))
    # Larger logits than the initialisation gives, and sharper attention, so that captions and
    # the positions attended differ.
    sharpened = {model.get_layer("decoder"): 4, model.get_layer("next_word"): 4}
    if architecture == "attention":
        sharpened[model.get_layer("attention_lstm").score] = 8
    if architecture == "transformer":
        sharpened |= {block.cross_attention.query: 8 for block in model.blocks}
    for layer, factor in sharpened.items():
        weights = layer.get_weights()
        layer.set_weights([weights[0] * factor, *weights[1:]])
    return model, utils.CaptionDecoder(model, vocab)


def greedy(no_repeat_ngram=0):
    return utils.DecodingSetting(1, 0.0, no_repeat_ngram)


def beam(width, length_penalty=0.0, no_repeat_ngram=0):
    return utils.DecodingSetting(width, length_penalty, no_repeat_ngram)


def ids(captions):
    return [caption.ids for caption in captions]


def features(n, dim=6, seed=1, architecture="merge"):
    """Feature vectors, or for a model that reads a grid grids [n, POSITIONS, dim]."""
    shape = (n, POSITIONS, dim) if split_kind(architecture)[1] else (n, dim)
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@EVERY_ARCHITECTURE
def test_step_gives_the_full_models_probabilities(architecture):
    model, decoder = random_decoder(20, 10, architecture=architecture)
    images = features(3, architecture=architecture)
    tokens = np.random.default_rng(2).integers(2, 24, size=(3, 7)).astype("int32")
    # Floored as the decoder floors them (CaptionDecoder): the sharpest models go below it.
    full = np.log(np.maximum(model.predict([images, tokens], verbose=0), 1e-12))
    context, state = decoder.start(images)
    for t in range(tokens.shape[1]):
        log_probs, state, weights = decoder.step(context, tokens[:, t], state)  # tensors
        np.testing.assert_allclose(log_probs, full[:, t], atol=1e-4)
        if split_kind(architecture)[1]:  # a distribution over the grid, per word
            weights = weights.numpy()
            assert weights.shape == (3, POSITIONS) and (weights >= 0).all()
            np.testing.assert_allclose(weights.sum(1), 1, atol=1e-5)
            assert weights.std(1).min() > 0.01  # it attends to some positions more than others
        else:
            assert weights is None


# Every decoding setting the equivalence tests write captions with: greedy and beams, with and
# without the length penalty, the rule against repeated n-grams of several sizes.
EVERY_SETTING = [utils.DecodingSetting(1, 0.0, 0), utils.DecodingSetting(1, 0.0, 2),
                 utils.DecodingSetting(3, 0.0, 0), utils.DecodingSetting(3, 1.0, 2),
                 utils.DecodingSetting(4, 0.5, 3), utils.DEFAULT_DECODING]


def assert_same_captions(compiled, expected):
    """The compiled search's captions are the oracle's, token for token; their maps equal to float
    rounding (inside one graph, TensorFlow may fuse the attention's arithmetic otherwise)."""
    assert ids(compiled) == ids(expected)
    for mine, theirs in zip(compiled, expected):
        assert (mine.maps is None) == (theirs.maps is None)
        if mine.maps is not None:
            np.testing.assert_allclose(mine.maps, theirs.maps, atol=1e-6)


@EVERY_ARCHITECTURE
def test_the_compiled_search_writes_the_oracles_captions(architecture):
    """utils.decode (one compiled graph) against tests/decoding_oracle.py (the search as it was
    written before: a Python loop over numpy), for every decoding setting."""
    _, decoder = random_decoder(30, 8, architecture=architecture)
    images = features(9, architecture=architecture)
    for setting in EVERY_SETTING:
        compiled = utils.decode(decoder, images, setting, images_per_batch=4)
        assert_same_captions(compiled, oracle.beam_search(decoder, images, setting))
    assert len({c.ids for c in compiled}) > 1  # the check means something: captions differ


@EVERY_ARCHITECTURE
def test_the_compiled_sampling_draws_the_oracles_captions(architecture):
    """Sampling (self-critical's) draws the words the oracle draws with the same noise, and never
    ends a caption on a bad ending."""
    _, decoder = random_decoder(30, 8, architecture=architecture)
    images = features(5, architecture=architecture)
    seed = np.random.default_rng(7).integers(2 ** 62, size=2)  # what sample_captions draws
    sampled = utils.sample_captions(decoder, images, 4, np.random.default_rng(7))
    assert_same_captions(sampled, oracle.sample_captions(decoder, images, 4, seed))
    assert len({c.ids for c in sampled}) > 10 and utils.bad_endings(c.text for c in sampled) == 0


def test_the_compiled_search_of_an_ensemble_writes_the_oracles_captions():
    decoder, images = ensemble(), features(7)
    for setting in EVERY_SETTING:
        assert_same_captions(utils.decode(decoder, images, setting),
                             oracle.beam_search(decoder, images, setting))


@EVERY_ARCHITECTURE
def test_batched_greedy_equals_one_image_at_a_time(architecture):
    _, decoder = random_decoder(30, 8, architecture=architecture)
    images = features(12, architecture=architecture)
    batched = utils.decode(decoder, images, greedy(), images_per_batch=5)
    single = [utils.decode(decoder, images[i:i + 1], greedy())[0] for i in range(12)]
    assert batched == single
    assert len({c.ids for c in batched}) > 1  # the check means something: captions differ
    assert [c.text for c in batched] == [decoder.vocab.decode(c.ids) for c in batched]


def plain_greedy(decoder, image, no_repeat_ngram):
    """The likeliest allowed word at each step, for one image, by the rules written out again:
    never <pad>, <start> or <unk>; <end> after max_length words; no n-gram said twice."""
    vocab = decoder.vocab
    context, state = decoder.start(image[None])
    caption, word = [], vocab.start_id
    for t in range(vocab.max_length + 1):
        log_probs, state, _ = decoder.step(context, [word], state)
        log_probs = log_probs.numpy()
        allowed = {vocab.end_id} if t == vocab.max_length else set(range(len(vocab))) - {
            vocab.pad_id, vocab.start_id, vocab.unk_id}
        if no_repeat_ngram:
            allowed -= {w for w in allowed if repeats_an_ngram(caption + [w], no_repeat_ngram)}
        word = max(allowed, key=lambda w: log_probs[0, w])
        if word == vocab.end_id:
            return tuple(caption)
        caption.append(word)


@EVERY_ARCHITECTURE
@pytest.mark.parametrize("no_repeat_ngram", [0, 2])
def test_beam_width_one_is_greedy(no_repeat_ngram, architecture):
    _, decoder = random_decoder(30, 8, architecture=architecture)
    images = features(10, architecture=architecture)
    assert (ids(utils.decode(decoder, images, beam(1, 0.0, no_repeat_ngram)))
            == [plain_greedy(decoder, image, no_repeat_ngram) for image in images])


@EVERY_ARCHITECTURE
def test_batched_beam_equals_one_image_at_a_time(architecture):
    _, decoder = random_decoder(30, 8, architecture=architecture)
    images = features(7, architecture=architecture)
    batched = utils.decode(decoder, images, beam(3), images_per_batch=4)
    assert batched == [utils.decode(decoder, images[i:i + 1], beam(3))[0] for i in range(7)]


@pytest.mark.parametrize("architecture", [k for k in model_kinds() if k.startswith("transformer")])
def test_cached_decoding_equals_reading_the_whole_prefix_again(architecture):
    """The Transformer's step reads one position against its cache of keys and values; written
    without the cache (the full model over the whole caption so far, at every word), greedy
    search finds the same captions."""
    model, decoder = random_decoder(30, 8, architecture=architecture)
    vocab, images = decoder.vocab, features(6, architecture=architecture)
    uncached = []
    for image in images:
        caption = [vocab.start_id]
        while True:
            log_probs = np.log(model((image[None], np.array([caption], "int32")))[0, -1].numpy())
            log_probs[[vocab.pad_id, vocab.start_id, vocab.unk_id]] = -np.inf
            if len(caption) > vocab.max_length:  # max_length words said: only <end> is left
                break
            word = int(np.argmax(log_probs))
            if word == vocab.end_id:
                break
            caption.append(word)
        uncached.append(tuple(caption[1:]))
    assert ids(utils.decode(decoder, images, greedy())) == uncached
    assert len(set(uncached)) > 1 and max(map(len, uncached)) > 1


def caption_log_probs(model, vocab, image, candidates):
    """Log-probability of `<start> words <end>` for each candidate, from the full model."""
    scores = {}
    for n in {len(w) for w in candidates}:
        same_length = [w for w in candidates if len(w) == n]
        ids = np.array([[vocab.start_id, *w, vocab.end_id] for w in same_length], "int32")
        images = np.repeat(image[None], len(ids), axis=0)
        probs = model.predict([images, ids[:, :-1]], verbose=0)
        picked = np.take_along_axis(probs, ids[:, 1:, None], axis=2)[..., 0]
        scores.update(zip(map(tuple, same_length), np.log(picked).sum(1)))
    return np.array([scores[tuple(w)] for w in candidates])


def repeats_an_ngram(caption, n):
    ngrams = [tuple(caption[i:i + n]) for i in range(len(caption) - n + 1)]
    return len(ngrams) != len(set(ngrams))


@EVERY_ARCHITECTURE
@pytest.mark.parametrize("length_penalty, no_repeat_ngram", [(0.0, 0), (1.0, 0), (0.0, 2)])
def test_wide_beam_finds_the_exhaustive_best(length_penalty, no_repeat_ngram, architecture):
    """Among every caption the rules allow (with `no_repeat_ngram`, those without a repeat)."""
    # A random model whose greedy caption misses the best one somewhere, its best clear of a tie
    # (with seed 4 the pooled Transformer's greedy captions are all the best ones, and the grid's
    # best two tie within float rounding).
    seed = 6 if architecture.startswith("transformer") else 4
    model, decoder = random_decoder(2, 3, seed=seed, architecture=architecture)
    vocab = decoder.vocab
    tokens = range(len(utils.SPECIAL_TOKENS), len(vocab))  # the words a caption can hold
    candidates = [list(w) for n in range(vocab.max_length + 1)
                  for w in itertools.product(tokens, repeat=n)
                  if not (no_repeat_ngram and repeats_an_ngram(w, no_repeat_ngram))]
    lengths = np.array([len(w) + 1 for w in candidates])  # the words and <end>
    images = features(6, seed=5, architecture=architecture)
    found = ids(utils.decode(decoder, images, beam(len(candidates), length_penalty,
                                                    no_repeat_ngram)))
    greedy_found = ids(utils.decode(decoder, images, greedy(no_repeat_ngram)))
    for image, caption in zip(images, found):
        scores = caption_log_probs(model, vocab, image, candidates) / lengths ** length_penalty
        assert list(caption) == candidates[int(np.argmax(scores))]
    if not length_penalty:  # the search is not trivial: greedy misses the best caption somewhere
        assert found != greedy_found


@pytest.mark.parametrize("setting", [utils.DecodingSetting(1, 0.0, 2), utils.DEFAULT_DECODING])
def test_attention_maps_come_with_their_captions(setting):
    """Each caption's maps are the weights that chose its words and its <end>, also after beam
    search reorders its beams: the step's own weights along the caption, re-run word by word."""
    _, decoder = random_decoder(30, 8, architecture="attention")
    images = features(5, architecture="attention")
    for image, caption in zip(images, utils.decode(decoder, images, setting)):
        weights = caption.maps
        assert weights.shape == (len(caption.ids) + 1, POSITIONS)
        np.testing.assert_allclose(weights.sum(1), 1, atol=1e-5)
        context, state = decoder.start(image[None])
        for t, word in enumerate([decoder.vocab.start_id, *caption.ids]):
            _, state, step_weights = decoder.step(context, [word], state)
            np.testing.assert_allclose(weights[t], step_weights[0], atol=1e-6)
    # A model that reads one pooled vector has no maps to give.
    assert all(c.maps is None for c in utils.decode(random_decoder(30, 8)[1], features(2), setting))


def test_captions_end_at_max_length_when_the_model_never_says_end():
    model, decoder = random_decoder(10, 4)
    bias = model.get_layer("next_word").get_weights()
    bias[1][decoder.vocab.end_id] = -50.0  # <end> practically impossible
    model.get_layer("next_word").set_weights(bias)
    images = features(3)
    for captions in (ids(utils.decode(decoder, images, greedy())),
                     ids(utils.decode(decoder, images, beam(3)))):
        assert [len(c) for c in captions] == [4, 4, 4]


def test_captions_never_say_unknown_even_when_it_is_likeliest():
    model, decoder = random_decoder(10, 4)
    bias = model.get_layer("next_word").get_weights()
    bias[1][decoder.vocab.unk_id] = 6.0  # <unk> the likeliest word
    model.get_layer("next_word").set_weights(bias)
    images = features(3)
    context, state = decoder.start(images)
    first, _, _ = decoder.step(context, np.full(3, decoder.vocab.start_id, "int32"), state)
    assert (first.numpy().argmax(1) == decoder.vocab.unk_id).all()
    for captions in (ids(utils.decode(decoder, images, greedy())),
                     ids(utils.decode(decoder, images, beam(3)))):
        assert all(captions) and all(i >= len(utils.SPECIAL_TOKENS) for c in captions for i in c)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_caption_repeats_an_ngram_under_the_rule_and_every_caption_ends(n):
    model, decoder = random_decoder(4, 12)
    bias = model.get_layer("next_word").get_weights()
    bias[1][decoder.vocab.end_id] = -50.0  # long captions over 4 words: repeats are certain
    model.get_layer("next_word").set_weights(bias)
    images = features(5)
    free = ids(utils.decode(decoder, images, greedy()) + utils.decode(decoder, images, beam(3)))
    assert all(repeats_an_ngram(c, n) for c in free)  # what the rule must prevent
    for captions in (ids(utils.decode(decoder, images, greedy(n))),
                     ids(utils.decode(decoder, images, beam(3, 0.0, n)))):
        assert all(c and not repeats_an_ngram(c, n) for c in captions)
        if n == 1:  # four words said once each, then <end>, the only word left
            assert [len(c) for c in captions] == [4] * 5


def test_decoding_settings_are_checked_and_labelled():
    assert utils.DEFAULT_DECODING == utils.DecodingSetting(5, 1.0, 2)
    assert utils.DEFAULT_DECODING.label == "beam 5, length penalty 1, no repeated 2-gram"
    greedy = utils.DecodingSetting(1, 1.0, 0)
    assert greedy.length_penalty == 0.0 and greedy == utils.DecodingSetting(1, 0.0, 0)
    assert greedy.label == "greedy"
    for setting in (utils.DEFAULT_DECODING, greedy, utils.DecodingSetting(3, 0.5, 3)):
        assert utils.DecodingSetting.from_slug(setting.slug) == setting
    with pytest.raises(ValueError, match="'beam 5' is not a decoding setting's slug"):
        utils.DecodingSetting.from_slug("beam 5")
    for bad in [(0, 0.0, 0), (3, -1.0, 0), (3, 0.0, -2)]:
        with pytest.raises(ValueError, match="not a decoding setting"):
            utils.DecodingSetting(*bad)


# An ensemble's members: three architectures, each with its own context and state.
MEMBERS = [("merge", 0), ("par-inject", 1), ("transformer", 2)]


def ensemble(members=MEMBERS):
    return utils.Ensemble([random_decoder(20, 8, seed=seed, architecture=architecture)[1]
                           for architecture, seed in members])


def test_an_ensemble_step_averages_its_members_probabilities():
    decoder, images = ensemble(), features(4)
    tokens = np.random.default_rng(3).integers(4, 24, size=(4, 6)).astype("int32")
    contexts, states = decoder.start(images)
    alone = [member.start(images) for member in decoder.members]  # each member stepped alone
    for word in tokens.T:
        log_probs, states, weights = decoder.step(contexts, word, states)
        members = []
        for i, (member, (context, state)) in enumerate(zip(decoder.members, alone)):
            member_log_probs, state, _ = member.step(context, word, state)
            alone[i] = context, state
            members.append(np.exp(member_log_probs))
        np.testing.assert_allclose(np.exp(log_probs), np.mean(members, 0), atol=1e-6)
        assert weights is None
    assert np.abs(members[0] - members[1]).max() > 0.05  # the members disagree: the mean matters


def test_an_ensemble_decodes_as_one_model_does():
    """The searches take an Ensemble as they take one model: greedy is the plain loop over its
    averaged probabilities, beams batched equal beams one image at a time (every member's state
    reordered with its beams), and an ensemble of one writes its member's captions."""
    decoder, images = ensemble(), features(7)
    assert (ids(utils.decode(decoder, images, greedy(2)))
            == [plain_greedy(decoder, image, 2) for image in images])
    batched = utils.decode(decoder, images, beam(3, 1.0, 2), images_per_batch=4)
    assert batched == [utils.decode(decoder, images[i:i + 1], beam(3, 1.0, 2))[0]
                       for i in range(7)]
    alone = ensemble(MEMBERS[:1])
    member_captions = utils.decode(alone.members[0], images, utils.DEFAULT_DECODING)
    assert utils.decode(alone, images, utils.DEFAULT_DECODING) == member_captions
    assert batched != utils.decode(alone.members[0], images, beam(3, 1.0, 2))  # the others count


def test_members_of_other_encoders_read_their_own_table():
    """Members of other feature sizes (other encoders) read the ensemble's input as tables side
    by side, each its own: the same captions as the oracle's loop, and as each member given only
    its table where the ensemble has one member."""
    sizes = [6, 9, 6]  # two encoders: members 0 and 2 read the first, member 1 the second
    members = [random_decoder(20, 8, feature_dim=size, seed=seed)[1]
               for seed, size in enumerate(sizes)]
    decoder = utils.Ensemble(members, reads=[0, 1, 0])
    assert decoder.table_widths == (6, 9)
    rng = np.random.default_rng(5)
    tables = [rng.normal(size=(5, 6)), rng.normal(size=(5, 9))]
    images = np.concatenate(tables, axis=1).astype("float32")
    for setting in (greedy(2), beam(3, 1.0, 2)):
        assert_same_captions(utils.decode(decoder, images, setting),
                             oracle.beam_search(decoder, images, setting))
    second = utils.Ensemble([members[1]], reads=[0])
    assert (utils.decode(second, tables[1].astype("float32"))
            == utils.decode(members[1], tables[1].astype("float32")))
    with pytest.raises(ValueError, match="members reading table 0 differ in feature size"):
        utils.Ensemble(members, reads=[0, 0, 1])
    with pytest.raises(ValueError, match="tables must be numbered 0, 1"):
        utils.Ensemble(members, reads=[0, 2, 0])


def test_an_ensemble_of_two_vocabularies_is_refused():
    with pytest.raises(ValueError, match="share one vocabulary"):
        utils.Ensemble([random_decoder(20, 8)[1], random_decoder(21, 8)[1]])


def test_the_shipped_run_writes_the_oracles_captions_for_the_dev_photos(shared_flickr8k):
    """The whole official split's 1,000 dev photos, the shipped run, every setting: the compiled
    search writes the oracle's captions. A tie between two equal scores broken otherwise would be
    the one legitimate difference; it is shown with both captions' scores, and none occurs."""
    from conftest import SHIPPED_RUN
    decoder, vocab, config = utils.load_decoder([SHIPPED_RUN])
    names, table = utils.load_feature_tables(  # its features: Lite0's and Lite2's side by side
        [shared_flickr8k / "features" / f"flickr8k_trainval_efficientnet_{encoder}.npz"
         for encoder in ("lite0", "lite2")])
    row = {name: i for i, name in enumerate(names)}
    dev = utils.read_split_file(shared_flickr8k / "Flickr_8k.devImages.txt")
    images = table[np.array([row[name] for name in dev])]  # [1000, 2560] float32
    assert len(images) == 1000
    for setting in EVERY_SETTING:
        compiled = utils.decode(decoder, images, setting)
        expected = oracle.beam_search(decoder, images, setting)
        differ = [(name, mine.text, theirs.text) for name, mine, theirs
                  in zip(dev, compiled, expected) if mine.ids != theirs.ids]
        assert not differ, f"{setting.label}: {len(differ)} captions differ, {differ[:5]}"
