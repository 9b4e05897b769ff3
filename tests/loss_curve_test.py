import csv

from kstory.training.loss_curve import loss_terms
from kstory.training.loss_curve import plot_loss_curve


def test_every_logged_loss_term_gets_a_panel_with_the_total_first():
    # CSVLogger writes its keys sorted, so "loss" sits among the terms.
    columns = [
        "epoch",
        "bag_of_words_loss",
        "contrastive_loss",
        "image_loss",
        "loss",
        "text_loss",
        "val_bag_of_words_loss",
        "val_loss",
    ]
    assert loss_terms(columns) == [
        "loss",
        "bag_of_words_loss",
        "contrastive_loss",
        "image_loss",
        "text_loss",
    ]


def test_a_history_without_a_term_draws_the_others(tmp_path):
    history = tmp_path / "history.csv"
    with open(history, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "image_loss", "loss", "val_image_loss", "val_loss"])
        writer.writerows([[0, 0.5, 1.0, 0.6, 1.1], [1, 0.4, 0.8, 0.5, 0.9]])
    output = tmp_path / "curve.png"
    plot_loss_curve(str(history), str(output))
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
