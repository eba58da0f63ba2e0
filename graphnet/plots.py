"""Training curves: cost, loss and accuracy against the update step.

matplotlib with the Agg backend, so no display is needed.
"""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .runs import atomic_write  # noqa: E402

PANELS = (("cost", "cost (loss + L2)"), ("loss", "cross-entropy loss"),
          ("accuracy", "accuracy"))


def plot_curves(rows, title=None, ax_row=None):
    """Draw the three panels of one run's metrics; return the figure."""
    steps = [r["step"] for r in rows]
    if ax_row is None:
        fig, ax_row = plt.subplots(1, 3, figsize=(13, 3.6))
    else:
        fig = ax_row[0].figure
    for ax, (key, label) in zip(ax_row, PANELS):
        for split, style in (("train", "-"), ("val", "--")):
            ax.plot(steps, [r[f"{split}_{key}"] for r in rows], style,
                    label="training" if split == "train" else "validation")
        ax.set_xlabel("update step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_row[0].legend()
    if title:
        ax_row[1].set_title(title)
    fig.tight_layout()
    return fig


def save_figure(fig, path, dpi=110):
    """Save a figure atomically as PNG (or as the suffix says) and close it."""
    buf = io.BytesIO()
    fmt = str(path).rsplit(".", 1)[-1]
    fig.savefig(buf, format=fmt, dpi=dpi)
    plt.close(fig)
    atomic_write(path, buf.getvalue(), mode="wb")


def save_curves(rows, path, title=None):
    """Write ``curves.png`` for a run's metrics rows."""
    save_figure(plot_curves(rows, title=title), path)
