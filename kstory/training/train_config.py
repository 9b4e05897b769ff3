"""Settings of a training run."""

import dataclasses

from kstory.config_checks import check_at_least
from kstory.config_checks import check_choices
from kstory.config_checks import check_field_types

JIT_COMPILE_CHOICES = ("auto", "true", "false")


def jit_compile_argument(setting):
    """`train.jit_compile` (or `kstory bench --jit-compile`) as `Model.compile`
    takes it: `"auto"`, True or False."""
    if setting not in JIT_COMPILE_CHOICES:
        raise ValueError(f"jit_compile must be one of {JIT_COMPILE_CHOICES}; got {setting!r}.")
    return {"auto": "auto", "true": True, "false": False}[setting]


@dataclasses.dataclass
class TrainConfig:
    """How long and how a `StoryModel` trains.

    Args:
        epochs: int. Passes over the training windows.
        learning_rate: float. AdamW learning rate (1e-4 in the paper).
        weight_decay: float. AdamW weight decay.
        early_stopping_patience: int. Epochs without a better validation loss
            before stopping; 0 turns early stopping off. With it on, the saved
            model holds the best validation epoch's weights.
        backup_every_batches: int. Also back up the training state every
            this many batches, so that a killed run resumes mid-epoch; 0
            backs up at epoch ends only.
        batch_norm_recalibration_batches: int. With a trained image encoder,
            re-estimate its batch-norm statistics from this many batches of
            training frames before each validation ("precise BN", see
            `kstory.training.batch_norm_recalibration`); 0 turns it off.
        jit_compile: str. `"auto"`, `"true"` or `"false"`.
        image_feature_cache: str. Train from cached features of the frozen
            image encoder (`kstory.data.feature_cache`): `"auto"` does when
            `model.freeze_image_encoder` is set, `"true"` requires it,
            `"false"` always decodes and encodes the frames.
        text_feature_cache: str. Also train from cached states of the frozen
            text layers (`kstory.data.text_cache`): `"auto"` does when the
            image feature cache is used and `model.num_frozen_text_layers`
            >= 1, `"true"` requires both, `"false"` runs every caption
            through them.
    """

    epochs: int = 20
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    early_stopping_patience: int = 5
    backup_every_batches: int = 0
    batch_norm_recalibration_batches: int = 10
    jit_compile: str = "auto"
    image_feature_cache: str = "auto"
    text_feature_cache: str = "auto"

    def __post_init__(self):
        check_field_types(self, "train")
        check_at_least(self, "train", ("epochs",), 1)
        if self.learning_rate <= 0:
            raise ValueError(f"train.learning_rate must be positive; got {self.learning_rate}.")
        check_choices(
            self,
            "train",
            {
                "jit_compile": JIT_COMPILE_CHOICES,
                "image_feature_cache": ("auto", "true", "false"),
                "text_feature_cache": ("auto", "true", "false"),
            },
        )
        non_negative = (
            "weight_decay",
            "early_stopping_patience",
            "backup_every_batches",
            "batch_norm_recalibration_batches",
        )
        check_at_least(self, "train", non_negative, 0)
