import logging

from kstory.data.skip_log import SkipLog


def test_counts_names_and_logs_each_skip(caplog):
    skips = SkipLog("fixture")
    with caplog.at_level(logging.WARNING, logger="kstory.data"):
        skips.skip("12", "bad_image", "frame 3: zero-byte image")
        skips.skip("40", "too_few_frames")
        skips.skip("41", "too_few_frames")
    assert skips.counts() == {"bad_image": 1, "too_few_frames": 2}
    assert skips.story_ids("too_few_frames") == ["40", "41"]
    assert len(skips) == 3
    assert "skipped story '12' (bad_image): frame 3: zero-byte image" in caplog.text
    assert skips.summary() == "fixture: skipped 3 stories (1 bad_image, 2 too_few_frames)"


def test_empty_summary():
    assert SkipLog("x").summary() == "x: no stories skipped"
