"""The symmetric InfoNCE (CLIP) loss over an image-text similarity matrix."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kstory")
class InfoNCELoss(keras.losses.Loss):
    """Symmetric InfoNCE: cross-entropy over rows and over columns of logits.

    `y_pred[i, j]` is the scaled similarity of image i and text j; `y_true[i]`
    is the index of image i's own text (usually `arange(n)`). The loss is the
    mean of the image->text and text->image cross-entropies, computed in
    float32 whatever the dtype of the logits.

    Duplicates among the candidates can be masked with
    `info_nce(..., not_negative=...)`.

    Args:
        name: str. Name of the loss.

    Example:
    >>> logits = 10.0 * np.eye(3)
    >>> float(InfoNCELoss()(np.arange(3), logits)) < 0.01
    True

    References:
        - [van den Oord et al., 2018](https://arxiv.org/abs/1807.03748)
        - [Radford et al., 2021](https://arxiv.org/abs/2103.00020)
    """

    def __init__(self, name="info_nce", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return info_nce(y_true, y_pred, ops.transpose(y_pred))


_MASKED_LOGIT = -1e9


def info_nce(labels, image_to_text, text_to_image, not_negative=None):
    """Per-row symmetric InfoNCE from the two directions' logits.

    Row i of `image_to_text` scores image i against every candidate text, and
    row i of `text_to_image` text i against every candidate image; `labels[i]`
    is the column of the matching pair. With all candidates in the batch the
    two are transposes (`InfoNCELoss`); with candidates gathered from other
    replicas they are two rectangular matrices.

    `not_negative[i, j]`, when given, marks candidates j that are copies of
    row i's pair (the same caption or the same frame). They are left out of
    both softmaxes, except the labelled column itself.
    """
    labels = ops.cast(labels, "int32")
    if not_negative is not None:
        columns = ops.arange(ops.shape(image_to_text)[1])
        masked = ops.logical_and(
            ops.cast(not_negative, "bool"), ops.not_equal(labels[:, None], columns[None, :])
        )
        image_to_text = ops.where(masked, _MASKED_LOGIT, ops.cast(image_to_text, "float32"))
        text_to_image = ops.where(masked, _MASKED_LOGIT, ops.cast(text_to_image, "float32"))
    image_to_text = keras.losses.sparse_categorical_crossentropy(
        labels, ops.cast(image_to_text, "float32"), from_logits=True
    )
    text_to_image = keras.losses.sparse_categorical_crossentropy(
        labels, ops.cast(text_to_image, "float32"), from_logits=True
    )
    return (image_to_text + text_to_image) / 2.0
