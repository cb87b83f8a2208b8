"""The coarse-to-fine schedule: phases by step, the built-in preset, schedule files and their errors."""

import json

import pytest

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.training.latent_degradation import DEFAULT_NOISE_STEPS, FINE_NOISE_STEPS, LatentDegradation
from flashvideo_core.training.schedule import Phase, Schedule, coarse_to_fine, load_schedule
from flashvideo_core.training.settings import TrainSettings


def test_each_step_belongs_to_its_phase_and_the_phase_sets_batch_and_noise_steps():
    schedule = Schedule((Phase(2, 32, 32, 5, image_share=1.0, batch=4), Phase(3, 64, 32, 9, noise_steps=(650, 750))))
    settings = TrainSettings(steps=5, batch=2, schedule=schedule)
    assert [schedule.phase_at(s)[0] for s in range(1, 6)] == [0, 0, 1, 1, 1]
    assert settings.at_step(2)[:2] == (4, LatentDegradation(DEFAULT_NOISE_STEPS))  # phase batch, run's range
    assert settings.at_step(3)[:2] == (2, LatentDegradation((650, 750)))  # run's batch, phase range
    assert TrainSettings(steps=7, batch=3).at_step(7) == (3, LatentDegradation(), None)  # no schedule: the run's
    with pytest.raises(FlashVideoInputError, match="steps=6 but the schedule's phases add up to 5"):
        TrainSettings(steps=6, schedule=schedule)


def test_coarse_to_fine_is_images_then_mixed_then_video_with_the_noise_steps_narrowed():
    schedule = coarse_to_fine(10, 64, 32, 9)
    assert [(p.name, p.steps, p.image_share) for p in schedule.phases] == [
        ("image patches", 3, 1.0), ("mixed", 3, 0.5), ("video", 4, 0.0)]
    assert [p.noise_steps for p in schedule.phases] == [None, None, FINE_NOISE_STEPS]
    assert schedule.total_steps == 10 and all((p.width, p.height, p.frames) == (64, 32, 9) for p in schedule.phases)
    with pytest.raises(FlashVideoInputError, match="at least 3 steps"):
        coarse_to_fine(2, 64, 32, 9)


def test_a_schedule_file_round_trips_and_fills_what_a_phase_leaves_out(tmp_path):
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"phases": [
        {"name": "patches", "steps": 5, "image_share": 1},
        {"steps": 7, "size": "96x64", "frames": 13, "noise_steps": [650, 750], "batch": 2},
    ]}))
    schedule = load_schedule(path, 48, 32, 9)
    first, second = schedule.phases
    assert (first.name, first.steps, first.width, first.height, first.frames, first.image_share) == (
        "patches", 5, 48, 32, 9, 1)
    assert (second.width, second.height, second.frames, second.noise_steps, second.batch) == (96, 64, 13, (650, 750), 2)
    (tmp_path / "again.json").write_text(schedule.to_json())
    assert load_schedule(tmp_path / "again.json", 16, 16, 1) == schedule


@pytest.mark.parametrize("phases, message", [
    ([{"name": "mixed", "steps": 3, "frames": 8}], r"phase 1 \('mixed'\), field 'frames': frames=8 is not"),
    ([{"steps": 3}, {"steps": 2, "image_share": 1.5}], r"phase 2, field 'image_share': image_share=1.5"),
    ([{"steps": 3, "size": "100x64"}], r"phase 1, field 'size': .*width=100 must be a multiple of 16"),
    ([{"steps": 3, "size": "big"}], r"phase 1, field 'size': size='big' must be WIDTHxHEIGHT"),
    ([{"steps": 3, "noise_steps": [900, 600]}], r"phase 1, field 'noise_steps': .*low must not exceed high"),
    ([{"steps": 0}], r"phase 1, field 'steps': steps=0 must be an integer >= 1"),
    ([{"steps": 3, "batch": 0}], r"phase 1, field 'batch': batch=0"),
    ([{"steps": 3, "imageshare": 1}], r"phase 1: unknown field 'imageshare'; a phase has name, steps, size"),
    ([{"size": "64x64"}], r"phase 1: field 'steps' is missing"),
    ([5], r"phase 1: a phase is an object"),
    ([], r"expected \{\"phases\""),
])
def test_a_bad_schedule_file_names_the_phase_and_the_field(tmp_path, phases, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"phases": phases}))
    with pytest.raises(FlashVideoInputError, match=rf"schedule file {path}(, | |: ).*{message}|{message}") as caught:
        load_schedule(path, 32, 32, 5)
    assert str(path) in str(caught.value)


def test_an_unreadable_or_missing_schedule_file_is_named(tmp_path):
    (tmp_path / "broken.json").write_text("{phases: ")
    with pytest.raises(FlashVideoInputError, match="broken.json is not readable JSON"):
        load_schedule(tmp_path / "broken.json", 32, 32, 5)
    with pytest.raises(FlashVideoInputError, match="none.json not found"):
        load_schedule(tmp_path / "none.json", 32, 32, 5)
