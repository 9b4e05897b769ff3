"""Draws every loss term of a run's history.csv."""

import csv


def loss_terms(columns):
    """The loss terms among a history's columns: the total first, then each
    training `*_loss` column in the file's order.

    Example:
    >>> loss_terms(["epoch", "image_loss", "loss", "val_image_loss", "val_loss"])
    ['loss', 'image_loss']
    """
    terms = [name for name in columns if name.endswith("_loss") and not name.startswith("val_")]
    return (["loss"] if "loss" in columns else []) + terms


def plot_loss_curve(history_path, output_path, title=None):
    """Plots train and validation curves of each loss term into a PNG.

    Args:
        history_path: str. A `CSVLogger` file with `epoch` and loss columns.
        output_path: str. Where the PNG goes.
        title: str. Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    with open(history_path) as file:
        rows = list(csv.DictReader(file))
    terms = loss_terms(list(rows[0]) if rows else [])
    figure, axes = pyplot.subplots(1, len(terms), figsize=(4 * len(terms), 3.2), squeeze=False)
    epochs = [int(row["epoch"]) + 1 for row in rows]
    for axis, term in zip(axes[0], terms):
        axis.plot(epochs, [float(row[term]) for row in rows], marker="o", label="train")
        if f"val_{term}" in rows[0]:
            axis.plot(
                epochs, [float(row[f"val_{term}"]) for row in rows], marker="o", label="validation"
            )
        axis.set_title(term)
        axis.set_xlabel("epoch")
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(output_path, dpi=90)
    pyplot.close(figure)
