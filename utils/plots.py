"""Figures the notebooks share: photos with their captions, readable at a glance.

No TensorFlow here (notebooks 01 and 03 use it too), and matplotlib only when a figure is drawn.
"""
import textwrap

__all__ = ["READABLE", "readable_figures", "caption_grid", "attention_figure", "draw_model"]

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


def attention_figure(image, caption, columns=5, width=10, title=None):
    """Each word of a caption over the photo, with where the model looked to say it: its
    attention map (weights over a square grid of positions, row-major), upsampled to the photo
    and blended over it, one small panel a word, as the TensorFlow tutorial plots them.
    `image`: RGB [H, W, 3] uint8; `caption`: a `Caption` of a model that attends (from `decode`
    or `caption_image`), whose maps are [words + 1, positions], the last the map of "<end>";
    `title` above them all."""
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    if caption.maps is None:
        raise ValueError(f"{caption.text!r} has no attention maps: they come from a model that "
                         "attends (ARCHITECTURE = 'attention', or 'transformer' on grids)")
    words = [*caption.text.split(), "<end>"]
    maps = np.asarray(caption.maps, "float32")
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


# draw_model's columns: the image branch, the words (and the LSTM they feed), the head.
_COLUMN = {"image": 0, "words": 1, "core": 1, "head": 0.5}


def draw_model(model):
    """A caption model (utils.architectures) as a picture, from its own description: its parts by
    branch (`model.parts()`), each layer with its number of weights, and where the image enters
    (`model.image_enters`), in orange."""
    import matplotlib.pyplot as plt

    parts = model.parts()
    # The core below the words, the head below the core (a little lower: it is off to the side).
    rows = {"image": 0, "words": 0, "core": len(parts["words"])}
    rows["head"] = rows["core"] + len(parts["core"]) + 0.3
    bottom = -rows["head"] - len(parts["head"]) + 0.5
    fig, ax = plt.subplots(figsize=(9, 1.1 * (1 - bottom)))  # 1.1 inch a row of boxes
    boxes = {}
    for branch, layers in parts.items():
        for i, layer in enumerate(layers):
            x, y = _COLUMN[branch], -(rows[branch] + i)
            boxes[layer.name] = ax.text(
                x, y, f"{layer.name} ({type(layer).__name__})\n{layer.count_params():,} weights",
                ha="center", va="center",
                bbox={"boxstyle": "round", "facecolor": "#f6e3db" if branch == "head" else "#dbe9f6"})

    def arrow(a, b, start, end, **style):
        """From layer a's box to layer b's, at points given as fractions of each box (so an arrow
        meets a box at its edge however wide its text); shrunk past the boxes' rounded padding."""
        ax.annotate("", end, xycoords=boxes[b.name], xytext=start, textcoords=boxes[a.name],
                    arrowprops={"arrowstyle": "->", "shrinkA": 5, "shrinkB": 5, **style})

    for layers in (parts["image"], parts["words"] + parts["core"] + parts["head"]):
        for a, b in zip(layers, layers[1:]):
            arrow(a, b, (0.5, 0), (0.5, 1))
    enters, how = model.image_enters
    image, target = parts["image"][-1], parts[enters][0]
    orange = {"color": "#b5562a", "lw": 2}
    if enters == "core":  # sideways into the LSTM
        arrow(image, target, (1, 0.5), (0, 0.5), **orange)
        ax.text(0.5, -rows["core"] + 0.3, how, ha="center", va="bottom", color="#b5562a")
    else:  # down into the head
        arrow(image, target, (0.5, 0), (0.5, 1), **orange)
        ax.text(0.2, -rows["head"] + 0.35, how, ha="right", va="center",
                color="#b5562a")  # beside the arrow
    ax.text(0, 0.6, "image features", ha="center", weight="bold")
    ax.text(1, 0.6, "caption so far", ha="center", weight="bold")
    ax.set_title(f"{model.architecture}: {type(model).__name__} (image in orange)")
    ax.set(xlim=(-0.5, 1.5), ylim=(bottom, 1))
    ax.axis("off")
    return fig
