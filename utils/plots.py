"""Figures the notebooks share: photos with their captions, readable at a glance.

No TensorFlow here (notebooks 01 and 03 use it too), and matplotlib only when a figure is drawn.
"""
import textwrap

__all__ = ["READABLE", "readable_figures", "caption_grid"]

# Figures at most 10 inches wide (1,000 pixels at the notebooks' 100 dpi) with 12-point text, so
# that every label reads at about 10 points or more on a page 1,000 pixels wide.
READABLE = {"font.size": 12, "axes.titlesize": 13, "figure.figsize": (10, 4)}


def readable_figures():
    """Make every later matplotlib figure of this process READABLE."""
    import matplotlib

    matplotlib.rcParams.update(READABLE)


def caption_grid(panels, columns=3, width=10):
    """A figure of images, each with its lines of text below it, readable on a page 1,000 pixels
    wide (12-point text in a 10-inch figure). `panels`: (RGB image, [line, ...]) pairs."""
    import matplotlib.pyplot as plt

    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width, 5 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (image, lines) in zip(axes.ravel(), panels):
        ax.imshow(image)
        ax.set(xticks=[], yticks=[])
        ax.spines[:].set_visible(False)
        # Below the image as its x label, so that tight_layout makes room for every line.
        ax.set_xlabel("\n".join(textwrap.fill(line, 28, subsequent_indent="  ") for line in lines),
                      loc="left", fontsize=12, linespacing=1.3)
    fig.tight_layout()
    return fig
