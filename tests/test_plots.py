"""Figures: photos with their captions below them, wrapped and readable."""
import matplotlib

matplotlib.use("Agg")
import numpy as np

import utils


def test_caption_grid_puts_every_caption_under_its_photo():
    photos = [np.full((20, 20, 3), v, "uint8") for v in (0, 120, 250, 60)]
    long = "a man in a red jacket climbs a rock face above a river in the mountains"
    fig = utils.caption_grid([(p, [f"greedy: photo {i}", long]) for i, p in enumerate(photos)])
    axes = fig.get_axes()
    assert len(axes) == 6 and fig.get_size_inches()[0] == 10  # three a row, two rows
    shown = [ax for ax in axes if ax.get_images()]
    assert len(shown) == 4 and not any(ax.axison for ax in axes[4:])
    for i, ax in enumerate(shown):
        label = ax.xaxis.label
        assert label.get_text().startswith(f"greedy: photo {i}\n")
        assert label.get_fontsize() >= 10
        assert all(len(line) <= 30 for line in label.get_text().splitlines())  # wrapped
        assert " ".join(label.get_text().replace("\n  ", " ").splitlines()[1:]) == long


def test_attention_figure_puts_each_words_map_where_its_weight_is():
    import matplotlib.pyplot as plt
    import pytest

    photo = np.full((60, 90, 3), 100, "uint8")
    maps = np.full((3, 9), 0.01, "float32")
    for word, position in enumerate((2, 3, 7)):  # row-major in a 3x3 grid: not symmetric
        maps[word, position] = 1 - 0.08
    caption = utils.Caption((5, 6), "a dog", maps)
    fig = utils.attention_figure(photo, caption, columns=2, title="where it looked")
    assert fig.get_size_inches()[0] == 10 and fig._suptitle.get_text() == "where it looked"
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["a", "dog", "<end>"]
    for ax, (row, column) in zip(panels, ((0, 2), (1, 0), (2, 1))):
        shown, blended = ax.get_images()
        assert shown.get_array().shape == photo.shape
        overlay = np.asarray(blended.get_array())  # upsampled to the photo, peak at the weight
        assert overlay.shape == photo.shape[:2] and 0.9 < overlay.max() <= 1  # scaled to its peak
        peak = np.unravel_index(overlay.argmax(), overlay.shape)
        assert (peak[0] * 3 // 60, peak[1] * 3 // 90) == (row, column)
    with pytest.raises(ValueError, match="3 words with <end> and maps \\(2, 9\\)"):
        utils.attention_figure(photo, utils.Caption((5, 6), "a dog", maps[:2]))
    with pytest.raises(ValueError, match="'a dog' has no attention maps"):
        utils.attention_figure(photo, utils.Caption((5, 6), "a dog"))
    plt.close("all")


def test_notebook_figures_are_at_most_ten_inches_wide_with_readable_text():
    import re

    import matplotlib.pyplot as plt

    from conftest import REPO

    utils.readable_figures()
    assert plt.figure().get_size_inches()[0] == 10 and matplotlib.rcParams["font.size"] >= 12
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        text = notebook.read_text()
        assert all(float(w) <= 10 for w in re.findall(r"figsize=\(([\d.]+)", text)), notebook.name
        assert not re.search(r"(fontsize|labelsize)=[0-9]\b", text), notebook.name  # under 10 pt
    plt.close("all")


def test_the_model_diagram_draws_where_each_architecture_puts_the_image():
    import matplotlib.pyplot as plt
    import pytest

    said = set()
    for architecture in utils.ARCHITECTURES:
        model = utils.build_caption_model(utils.ModelConfig(
            40, 12, architecture, units=16,
            positions=9 if architecture in utils.grid_architectures() else None))
        texts = [t.get_text() for t in utils.draw_model(model).axes[0].texts]
        assert model.architecture == architecture
        names = [layer.name for layer in model.layers]  # every layer drawn, once
        assert sum(t.startswith(f"{name} (") for name in names for t in texts) == len(names)
        where = [t for t in texts if t in {"+ image,\nat every step", "initial state",
                                           "first input, before <start>", "beside every word",
                                           "its mean: initial state;\nattended before every word",
                                           "cross-attention\nin every block"}]
        assert len(where) == 1
        said.add(where[0])
        plt.close("all")
    assert len(said) == 6  # each architecture says its own
    with pytest.raises(ValueError, match="unknown architecture 'other'; choose one of merge, "):
        utils.architecture_class("other")


def test_caption_grids_title_stays_above_the_photos():
    """Notebook 05 once set the title after the layout: it was drawn across the middle photo."""
    photos = [np.full((30, 60, 3), v, "uint8") for v in (0, 120, 250)]
    fig = utils.caption_grid([(p, ["a caption", "a second line of caption"]) for p in photos],
                             title="Best captioned")
    fig.canvas.draw()
    title = fig._suptitle.get_window_extent()
    for ax in fig.axes:
        assert ax.get_window_extent().y1 <= title.y0, "the title overlaps a photo"
        assert ax.get_images()[0].get_array().shape == (30, 60, 3)  # not squashed to a square
