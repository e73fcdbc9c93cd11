"""Replays (captioned GIFs of real BabyAI renders) and evaluation plots."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import minigrid  # noqa: F401  (registers BabyAI-*)
import numpy as np
import pytest
from PIL import Image, ImageSequence

from hf_thought_cloning.evaluation.replays import (
    caption_frames,
    plot_learning_curves,
    plot_success_by_bin,
    write_replay,
)


@pytest.fixture(scope="module")
def renders() -> list[np.ndarray]:
    """Five real renders of one GoToLocal episode (turns and forward moves)."""
    env = gym.make("BabyAI-GoToLocal-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frames = [env.render()]
    for action in (0, 2, 1, 2):
        env.step(action)
        frames.append(env.render())
    env.close()
    return frames


def gif_frames(path: Path) -> tuple[list[np.ndarray], list[int], dict]:
    with Image.open(path) as image:
        assert image.format == "GIF"
        info = dict(image.info)
        frames, durations = [], []
        for frame in ImageSequence.Iterator(image):
            frames.append(np.asarray(frame.convert("RGB")))
            durations.append(frame.info["duration"])
    return frames, durations, info


def test_gif_of_babyai_renders_round_trips(renders: list[np.ndarray], tmp_path: Path) -> None:
    captions = [f"step {i}: go to green ball to complete goto mission" for i in range(len(renders))]
    captions[2] += " [injected]"
    path = write_replay(renders, captions, tmp_path / "replays" / "episode.gif", fps=4)

    assert path == tmp_path / "replays" / "episode.gif"
    assert sorted(p.name for p in path.parent.iterdir()) == ["episode.gif"]  # no temporary left behind
    frames, durations, info = gif_frames(path)
    height, width = renders[0].shape[:2]
    assert len(frames) == len(renders)
    assert durations == [250] * len(renders)
    assert info["loop"] == 0
    band = frames[0].shape[0] - height
    assert band > 0 and all(frame.shape == (height + band, width, 3) for frame in frames)
    for frame, render in zip(frames, renders, strict=True):
        # the palette of a GIF frame may shift a colour slightly; the picture is the render
        assert np.abs(frame[:height].astype(int) - render.astype(int)).mean() < 2.0


def test_captions_are_drawn_and_differ(renders: list[np.ndarray], tmp_path: Path) -> None:
    frame = renders[0]
    captioned = caption_frames([frame, frame, frame], ["go to red ball", "pickup blue key", ""])
    height = frame.shape[0]
    text_rows = [image[height:-4] for image in captioned]  # the band without its progress bar
    assert (text_rows[0] < 128).any() and (text_rows[1] < 128).any()  # dark text pixels
    assert not (text_rows[2] < 128).any()  # an empty caption draws nothing
    assert not np.array_equal(text_rows[0], text_rows[1])
    # the same captions survive the GIF encoding
    frames, _, _ = gif_frames(
        write_replay([frame, frame], ["go to red ball", "pickup blue key"], tmp_path / "a.gif")
    )
    assert not np.array_equal(frames[0][height:-4], frames[1][height:-4])


def test_long_captions_wrap_into_a_taller_band(renders: list[np.ndarray]) -> None:
    frame = renders[0]
    short = caption_frames([frame], ["explore unseen area"])[0]
    long = caption_frames([frame], ["open purple door to complete open mission " * 6 + "x" * 200])[0]
    assert short.shape[1] == long.shape[1] == frame.shape[1]
    assert long.shape[0] > short.shape[0]


def test_identical_steps_stay_separate_frames(renders: list[np.ndarray], tmp_path: Path) -> None:
    # a repeated step (same view, same thought) is still one frame per step, with the requested delay
    frames, durations, _ = gif_frames(write_replay([renders[0]] * 3, ["wait"] * 3, tmp_path / "r.gif", fps=2))
    assert len(frames) == 3 and durations == [500] * 3


def test_bad_replay_inputs(renders: list[np.ndarray], tmp_path: Path) -> None:
    frame = renders[0]
    cases = [
        (([], []), "at least one frame"),
        (([frame, frame], ["one"]), "2 frames but 1 captions"),
        (([frame.astype(np.float32)], ["x"]), "RGB uint8"),
        (([frame[..., 0]], ["x"]), "RGB uint8"),
        (([frame[..., :2].copy()], ["x"]), "RGB uint8"),
        (([frame, frame[:100]], ["x", "y"]), "one size"),
        (([frame], [3]), "must be a string"),
    ]
    for (frames, captions), message in cases:
        with pytest.raises(ValueError, match=message):
            write_replay(frames, captions, tmp_path / "bad.gif")
    with pytest.raises(ValueError, match="fps"):
        write_replay([frame], ["x"], tmp_path / "bad.gif", fps=0)
    for suffix in (".avi", ".mp4"):  # GIF only: MP4 needs an ffmpeg binary
        with pytest.raises(ValueError, match=r"written as a \.gif"):
            write_replay([frame], ["x"], tmp_path / f"bad{suffix}")
    assert list(tmp_path.iterdir()) == []


SUCCESS_ROWS = [
    {"suite": "behavioural", "bin": "1-20 steps", "success_rate": 0.9, "episodes": 50},
    {"suite": "behavioural", "bin": "21-40 steps", "success_rate": 0.55, "episodes": 50},
    {"suite": "cognitive", "bin": "2 sub-instructions, sequenced", "success_rate": 0.4, "episodes": 40},
    {"suite": "larger worlds", "bin": "BossLevel", "success_rate": 0.0, "episodes": 0},
]


def assert_png(path: Path) -> None:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 100 and image.size[1] > 100
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_success_by_bin_png(tmp_path: Path) -> None:
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    path = plot_success_by_bin(SUCCESS_ROWS, tmp_path / "plots" / "success.png", title="TC, zero-shot")
    assert_png(path)
    if not pyplot_loaded:
        assert "matplotlib.pyplot" not in sys.modules  # the global backend was never touched


def test_success_by_bin_bad_rows(tmp_path: Path) -> None:
    row = SUCCESS_ROWS[0]
    cases = [
        ([], "at least one row"),
        ([{k: v for k, v in row.items() if k != "episodes"}], "lacks"),
        ([{**row, "success_rate": 1.5}], r"\[0, 1\]"),
        ([{**row, "success_rate": float("nan")}], "finite"),
        ([{**row, "episodes": -1}], "non-negative"),
        ([row, row], "repeats bin"),
    ]
    for rows, message in cases:
        with pytest.raises(ValueError, match=message):
            plot_success_by_bin(rows, tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"\.png"):
        plot_success_by_bin(SUCCESS_ROWS, tmp_path / "bad.jpg")
    assert list(tmp_path.iterdir()) == []


def test_learning_curves_png(tmp_path: Path) -> None:
    curves = {
        "Thought Cloning": [(0, 0.0, 0.0), (2e5, 0.6, 0.1), (1e5, 0.3, 0.05)],  # mean and std over seeds
        "Behavioral Cloning": [(0, 0.0), (1e5, 0.2), (2e5, 0.4)],
    }
    assert_png(plot_learning_curves(curves, tmp_path / "curves.png", title="MiniBossLevel"))


def test_learning_curves_bad_input(tmp_path: Path) -> None:
    cases = [
        ({}, "at least one curve"),
        ({"TC": []}, "no points"),
        ({"TC": [(0, 0.1), (1, 0.2, 0.1)]}, "all"),
        ({"TC": [(0, 0.1, -0.1)]}, "non-negative"),
        ({"TC": [(0, float("inf"))]}, "finite"),
        ({"TC": [(0, "high")]}, "number"),
    ]
    for curves, message in cases:
        with pytest.raises(ValueError, match=message):
            plot_learning_curves(curves, tmp_path / "bad.png")
    assert list(tmp_path.iterdir()) == []
