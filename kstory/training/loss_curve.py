"""Draws every loss term of a run's history.csv."""

import csv


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
    terms = [name for name in ("loss", "image_loss", "text_loss", "contrastive_loss")
             if rows and name in rows[0]]
    figure, axes = pyplot.subplots(1, len(terms), figsize=(4 * len(terms), 3.2), squeeze=False)
    epochs = [int(row["epoch"]) + 1 for row in rows]
    for axis, term in zip(axes[0], terms):
        axis.plot(epochs, [float(row[term]) for row in rows], marker="o", label="train")
        if f"val_{term}" in rows[0]:
            axis.plot(epochs, [float(row[f"val_{term}"]) for row in rows], marker="o",
                      label="validation")
        axis.set_title(term)
        axis.set_xlabel("epoch")
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(output_path, dpi=90)
    pyplot.close(figure)
