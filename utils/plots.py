"""Figures the notebooks share: photos with their captions, readable at a glance.

No TensorFlow here (notebooks 01 and 03 use it too), and matplotlib only when a figure is drawn.
"""
import textwrap

__all__ = ["READABLE", "readable_figures", "caption_grid", "attention_figure"]

# Figures at most 10 inches wide (1,000 pixels at the notebooks' 100 dpi) with 12-point text, so
# that every label reads at about 10 points or more on a page 1,000 pixels wide.
READABLE = {"font.size": 12, "axes.titlesize": 13, "figure.figsize": (10, 4)}


def readable_figures():
    """Make every later matplotlib figure of this process READABLE."""
    import matplotlib

    matplotlib.rcParams.update(READABLE)


def caption_grid(panels, columns=3, width=10, title=None):
    """A figure of images, each with its lines of text below it, readable on a page 1,000 pixels
    wide (12-point text in a 10-inch figure), and `title` above them all. `panels`: (RGB image,
    [line, ...]) pairs; each image keeps its own shape."""
    import matplotlib.pyplot as plt

    rows = -(-len(panels) // columns)
    # Constrained layout makes room for the title above the photos and every line below them.
    fig, axes = plt.subplots(rows, columns, figsize=(width, 5 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (image, lines) in zip(axes.ravel(), panels):
        ax.imshow(image)
        ax.set(xticks=[], yticks=[])
        ax.spines[:].set_visible(False)
        # Below the image as its x label, so that tight_layout makes room for every line.
        ax.set_xlabel("\n".join(textwrap.fill(line, 28, subsequent_indent="  ") for line in lines),
                      loc="left", fontsize=12, linespacing=1.3)
    if title:
        fig.suptitle(title, fontsize=14)
    return fig


def attention_figure(image, caption, maps, columns=5, width=10, title=None):
    """Each word of a caption over the photo, with where the model looked to say it: its
    attention map (weights over a square grid of positions, row-major), upsampled to the photo
    and blended over it, one small panel a word, as the TensorFlow tutorial plots them.
    `image`: RGB [H, W, 3] uint8; `caption`: the caption as decoded, words split at spaces;
    `maps`: [words + 1, positions], each row summing to one, the last the map of "<end>" (as
    `decode(..., attention=True)` and `caption_image(..., attention=True)` return them);
    `title` above them all."""
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    words = [*caption.split(), "<end>"]
    maps = np.asarray(maps, "float32")
    side = int(round(np.sqrt(maps.shape[1])))
    if side * side != maps.shape[1] or len(words) != len(maps):
        raise ValueError(f"{len(words)} words with <end> and maps {maps.shape}: one map a word, "
                         "each over a square grid of positions")
    rows = -(-len(words) // columns)
    # Square panels, each with a line of title above it, and room for the figure's title too.
    fig, axes = plt.subplots(rows, columns, squeeze=False, layout="constrained",
                             figsize=(width, rows * (width / columns + 0.35) + 0.4 * bool(title)))
    for ax in axes.ravel():
        ax.axis("off")
    height, breadth = image.shape[:2]
    for ax, word, weights in zip(axes.ravel(), words, maps):
        # Each map on its own scale (its peak white): what matters is where, within one word.
        grid = Image.fromarray(weights.reshape(side, side) / weights.max())
        ax.imshow(image)
        ax.imshow(np.asarray(grid.resize((breadth, height), Image.BILINEAR)), cmap="gray",
                  alpha=0.6, vmin=0, vmax=1)
        ax.set_title(word, fontsize=12)
    if title:
        fig.suptitle(title, fontsize=14)
    return fig
