import pytest

from kstory.bench.epoch_bench import run_epoch_bench
from kstory.bench.epoch_bench import synthetic_stories


def test_synthetic_stories_are_shaped_like_story_reasoning():
    stories = synthetic_stories(40, seed=1)
    counts = [story.num_frames for story in stories]
    assert min(counts) >= 5 and max(counts) <= 22 and 10 <= sorted(counts)[20] <= 15
    assert stories[0].images[0][:2] == b"\xff\xd8"  # JPEG
    assert len({image for story in stories for image in story.images}) == sum(counts)


# Two short training runs: backend-independent glue over fit and the cache,
# which feature_cache_test checks on every backend; run once.
@pytest.mark.single_backend
def test_epoch_bench_times_naive_and_cached_epochs():
    result = run_epoch_bench("tiny", num_stories=3, epochs=2)
    assert result["frozen_text_layers"] == "1 of 2"
    assert result["unique_frames"] == result["frames"]
    assert 0 < result["unique_captions"] <= result["frames"]
    assert result["windows"] == result["frames"] - 4 * 3
    assert result["frame_slots_per_epoch"] == 5 * result["windows"]
    for name in (
        "naive_epoch_s",
        "cached_epoch_s",
        "text_cached_epoch_s",
        "cache_build_s",
        "text_cache_build_s",
        "naive_decode_only_epoch_s",
    ):
        assert result[name] > 0, name
    ratios = {
        "epoch_speedup": ("naive_epoch_s", "cached_epoch_s"),
        "text_cache_epoch_speedup": ("naive_epoch_s", "text_cached_epoch_s"),
        "text_cache_over_image_cache": ("cached_epoch_s", "text_cached_epoch_s"),
    }
    for name, (slower, faster) in ratios.items():
        assert result[name] == pytest.approx(result[slower] / result[faster], rel=0.1), name
    with pytest.raises(ValueError, match="at least 2 epochs"):
        run_epoch_bench("tiny", num_stories=3, epochs=1)
