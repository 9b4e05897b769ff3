import keras
import numpy as np

from kstory.data.pipeline import make_dataset
from kstory.data.story_text_preprocessor import StoryTextPreprocessor


def test_feeds_model_fit_on_the_active_backend(embedded_stories, learned_tokenizer):
    preprocessor = StoryTextPreprocessor(learned_tokenizer, 48, 48)
    dataset = make_dataset(
        embedded_stories,
        preprocessor,
        image_size=16,
        target_image_size=8,
        batch_size=4,
        shuffle=True,
    )
    vocabulary_size = learned_tokenizer.vocabulary_size()
    images = keras.Input((4, 16, 16, 3), dtype="uint8", name="images")
    token_ids = keras.Input((4, 48), dtype="int32", name="token_ids")
    padding_mask = keras.Input((4, 48), dtype="int32", name="padding_mask")
    decoder_ids = keras.Input((48,), dtype="int32", name="decoder_token_ids")
    pooled = keras.layers.GlobalAveragePooling3D()(keras.layers.Rescaling(1 / 255)(images))
    next_image = keras.layers.Reshape((8, 8, 3), name="next_image")(
        keras.layers.Dense(8 * 8 * 3, activation="sigmoid")(pooled)
    )
    embedded = keras.layers.Embedding(vocabulary_size, 8)(decoder_ids)
    next_ids = keras.layers.Dense(vocabulary_size, name="next_token_ids")(embedded)
    model = keras.Model(
        {
            "images": images,
            "token_ids": token_ids,
            "padding_mask": padding_mask,
            "decoder_token_ids": decoder_ids,
        },
        {"next_image": next_image, "next_token_ids": next_ids},
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss={
            "next_image": "mse",
            "next_token_ids": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
    )
    history = model.fit(dataset, epochs=2, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[1] < losses[0]
