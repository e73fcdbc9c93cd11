"""Replays of episodes with the agent's thoughts captioned, and plots of evaluation results.

* ``write_replay``: an animated GIF (Pillow) of rendered frames, each with its caption (the agent's current
  thought) drawn in a band under the image, and a thin progress bar at the bottom of the band.
  ``write_episode_replay`` writes one recorded episode (``record_frames``) with ``step_caption``'s captions.
* ``plot_success_by_bin``: a PNG bar chart of success rate per difficulty bin, one panel per suite
  (optionally one bar per group, e.g. per agent, in each bin).
* ``plot_learning_curves``: a PNG of success (or any metric) against training frames for several agents.

Plots use matplotlib's object API (``Figure`` + ``FigureCanvasAgg``), so importing this module never
changes the global pyplot backend of the caller. Every file is written to a temporary name in its folder
and renamed, so a reader never sees a half-written replay or plot.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from PIL import Image, ImageDraw, ImageFont

from dataset_builder.files import atomic_write
from dataset_builder.traces import ACTION_NAMES

__all__ = [
    "caption_frames",
    "plot_learning_curves",
    "plot_success_by_bin",
    "step_caption",
    "write_episode_replay",
    "write_replay",
]

BAND_BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)
PROGRESS_COLOUR = (70, 110, 200)
PROGRESS_HEIGHT = 3
MARGIN = 6


# ------------------------------------------------------------------------------------------ replays
def _check_frames(frames: Sequence[np.ndarray], captions: Sequence[str]) -> None:
    if len(frames) == 0:
        raise ValueError("a replay needs at least one frame")
    if len(frames) != len(captions):
        raise ValueError(f"{len(frames)} frames but {len(captions)} captions: give one caption per frame")
    shape = None
    for index, (frame, caption) in enumerate(zip(frames, captions, strict=True)):
        if (
            not isinstance(frame, np.ndarray)
            or frame.dtype != np.uint8
            or frame.ndim != 3
            or frame.shape[2] != 3
        ):
            described = (
                f"{frame.dtype} array of shape {frame.shape}"
                if isinstance(frame, np.ndarray)
                else type(frame).__name__
            )
            raise ValueError(f"frame {index} must be an RGB uint8 array of shape (H, W, 3), got {described}")
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise ValueError(f"frame {index} is empty: shape {frame.shape}")
        if shape is None:
            shape = frame.shape
        elif frame.shape != shape:
            raise ValueError(
                f"frames of one replay must have one size: frame 0 is {shape}, frame {index} {frame.shape}"
            )
        if not isinstance(caption, str):
            raise ValueError(f"caption {index} must be a string, got {type(caption).__name__}")


def _font(width: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font, scaled with the frame so captions stay legible on large renders.
    return ImageFont.load_default(size=max(12, width // 20))


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a word longer than a line is split between characters."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for char in word:
                if line and font.getlength(line + char) > width:
                    lines.append(line)
                    line = ""
                line += char
        lines.append(line)
    return lines


def caption_frames(frames: Sequence[np.ndarray], captions: Sequence[str]) -> list[np.ndarray]:
    """Each frame with its caption in a band underneath: RGB uint8 arrays of one size, (H + band, W, 3).

    The band is as tall as the longest wrapped caption of the replay needs, so all frames keep one size.
    A progress bar along the bottom of the band shows how far into the episode each frame is (it also
    keeps consecutive frames distinct, which stops GIF encoders from merging repeated steps).
    """
    _check_frames(frames, captions)
    height, width = frames[0].shape[:2]
    font = _font(width)
    ascent, descent = font.getmetrics()
    line_height = ascent + descent + 2
    wrapped = [_wrap(caption, font, width - 2 * MARGIN) for caption in captions]
    band = 2 * MARGIN + max(map(len, wrapped)) * line_height + PROGRESS_HEIGHT
    captioned = []
    for index, (frame, lines) in enumerate(zip(frames, wrapped, strict=True)):
        canvas = Image.new("RGB", (width, height + band), BAND_BACKGROUND)
        canvas.paste(Image.fromarray(frame), (0, 0))
        draw = ImageDraw.Draw(canvas)
        for row, line in enumerate(lines):
            draw.text((MARGIN, height + MARGIN + row * line_height), line, fill=TEXT_COLOUR, font=font)
        progress = round(width * (index + 1) / len(frames))
        draw.rectangle(
            (0, height + band - PROGRESS_HEIGHT, progress - 1, height + band - 1), fill=PROGRESS_COLOUR
        )
        captioned.append(np.asarray(canvas))
    return captioned


def _write_gif(images: list[np.ndarray], path: Path, fps: int) -> None:
    # One adaptive palette per frame: BabyAI renders use few colours, the antialiased text a few greys.
    frames = [Image.fromarray(image).quantize(colors=256) for image in images]
    frames[0].save(
        path, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0
    )


def write_replay(frames: list[np.ndarray], captions: list[str], path: Path, fps: int = 4) -> Path:
    """Write an animated replay of ``frames`` with ``captions`` under them; returns ``path``.

    Args:
        frames: RGB uint8 arrays (H, W, 3) of one size, e.g. ``env.render()`` of an env made with
            ``render_mode="rgb_array"``.
        captions: one string per frame (the agent's thought at that step); long ones are wrapped.
        path: a ``.gif`` file (MP4 is not offered: it would need an ffmpeg binary the tests cannot rely on).
        fps: frames per second. GIF stores delays in 10 ms units, so each frame lasts ``round(1000 / fps)``
            ms rounded to 10 ms.

    Raises:
        ValueError: empty or mismatched inputs, frames that are not RGB uint8 of one size, a bad ``fps`` or
            a suffix other than ``.gif``.
    """
    path = Path(path)
    if isinstance(fps, bool) or not isinstance(fps, int) or fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    if path.suffix.lower() != ".gif":
        raise ValueError(f"a replay is written as a .gif, got {path.name!r}")
    images = caption_frames(frames, captions)
    return atomic_write(path, lambda tmp: _write_gif(images, tmp, fps))


def step_caption(index: int, step) -> str:
    """``"3: open red door -> toggle"``: a ``StepRecord``'s thought and action (a halted step says so)."""
    thought = step.thought if step.thought is not None else "(no thought)"
    action = ACTION_NAMES[step.action]
    return (
        f"{index}: {thought} -> HALTED before {action}" if step.halted else f"{index}: {thought} -> {action}"
    )


def write_episode_replay(record, path: Path, fps: int = 4) -> Path:
    """The replay of an ``EpisodeRecord`` played with frames recorded, one captioned frame per step."""
    if any(step.frame is None for step in record.steps):
        raise ValueError("the episode was played without frames: play it with record_frames=True")
    captions = [step_caption(index, step) for index, step in enumerate(record.steps)]
    return write_replay([step.frame for step in record.steps], captions, path, fps=fps)


# ------------------------------------------------------------------------------------------ plots
def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


def _save_figure(figure: Figure, path: Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plots are written as .png, got {path.name!r}")
    FigureCanvasAgg(figure)  # attaches an Agg canvas to this figure only; pyplot's backend is untouched
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))


def plot_success_by_bin(rows: list[dict], path: Path, title: str | None = None) -> Path:
    """Bar chart (PNG) of success rate per difficulty bin, one panel per suite; returns ``path``.

    Each row has ``suite``, ``bin`` (its label), ``success_rate`` in [0, 1] and ``episodes`` (a count
    written over the bar). Suites and bins appear in the order of ``rows``; a (suite, bin) pair may occur
    once. Rows may also all have a ``group`` (an agent, say): each bin then shows one bar per group side by
    side, one colour per group (in order of first appearance) with a legend, and a (suite, bin, group)
    triple may occur once.
    """
    if not rows:
        raise ValueError("plot_success_by_bin needs at least one row")
    suites: dict[str, dict[str, dict[str | None, tuple[float, int]]]] = {}  # suite -> bin -> group -> bar
    groups: list[str | None] = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {index} must be a dict, got {type(row).__name__}")
        missing = [key for key in ("suite", "bin", "success_rate", "episodes") if key not in row]
        if missing:
            raise ValueError(f"row {index} lacks {missing} (rows need suite, bin, success_rate, episodes)")
        rate = _finite(row["success_rate"], f"row {index} success_rate")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"row {index} success_rate must be in [0, 1], got {rate}")
        episodes = row["episodes"]
        if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 0:
            raise ValueError(f"row {index} episodes must be a non-negative integer, got {episodes!r}")
        suite, label = str(row["suite"]), str(row["bin"])
        group = None if row.get("group") is None else str(row["group"])
        if groups and (group is None) != (groups[0] is None):
            raise ValueError(f"row {index}: either every row has a group or none has")
        bars = suites.setdefault(suite, {}).setdefault(label, {})
        if group in bars:
            of_group = "" if group is None else f" for group {group!r}"
            raise ValueError(f"row {index} repeats bin {label!r} of suite {suite!r}{of_group}")
        bars[group] = (rate, int(episodes))
        if group not in groups:
            groups.append(group)

    grouped = groups != [None]
    bar_width = 0.8 / len(groups) if grouped else 0.7
    counts = [len(bins) for bins in suites.values()]
    width = max(4.5, 0.9 * max(1.0, 0.45 * len(groups)) * sum(counts) + 1.2 * len(counts))
    figure = Figure(figsize=(width, 4.5), dpi=110, layout="constrained")
    grid = figure.subplots(1, len(suites), sharey=True, squeeze=False, gridspec_kw={"width_ratios": counts})
    axes = grid[0]
    for axis, (suite, bins) in zip(axes, suites.items(), strict=True):
        for number, group in enumerate(groups):
            offset = (number - (len(groups) - 1) / 2) * bar_width
            drawn = [
                (position, bins[label][group]) for position, label in enumerate(bins) if group in bins[label]
            ]
            if not drawn:
                continue
            bars = axis.bar(
                [position + offset for position, _ in drawn], [rate for _, (rate, _) in drawn],
                width=bar_width, color=f"C{number}" if grouped else "#4c72b0", label=group,
            )  # fmt: skip
            for bar, (_, (rate, episodes)) in zip(bars, drawn, strict=True):
                axis.annotate(
                    f"{rate:.0%} n={episodes}" if grouped else f"{rate:.0%}\nn={episodes}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=6 if grouped else 7,
                    rotation=90 if grouped else 0,
                )  # fmt: skip
        axis.set_xticks(range(len(bins)), [textwrap.fill(label, 14) for label in bins], fontsize=8)
        axis.set_title(suite, fontsize=10)
        axis.set_ylim(0, 1.38 if grouped else 1.18)  # room for the labels over a 100% bar
        axis.set_yticks(np.linspace(0.0, 1.0, 6))
        axis.set_xlim(-0.6, len(bins) - 0.4)
        axis.yaxis.set_major_formatter(PercentFormatter(1.0))
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("success rate")
    if grouped:
        handles, labels = axes[0].get_legend_handles_labels()
        for axis in axes[1:]:  # a group with no bar in the first panel still gets its legend entry
            for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
                if label not in labels:
                    handles.append(handle)
                    labels.append(label)
        order = sorted(range(len(labels)), key=lambda i: groups.index(labels[i]))
        figure.legend(
            [handles[i] for i in order], [labels[i] for i in order], loc="outside lower center",
            ncols=len(labels), fontsize=8, frameon=False,
        )  # fmt: skip
    if title:
        figure.suptitle(title)
    return _save_figure(figure, path)


def plot_learning_curves(
    curves: dict[str, list[tuple[float, float]] | list[tuple[float, float, float]]],
    path: Path,
    xlabel: str = "training frames",
    ylabel: str = "success rate",
    title: str | None = None,
) -> Path:
    """Line plot (PNG) of several named agents; returns ``path``.

    ``curves`` maps an agent's name to its points: ``(x, y)`` pairs, or ``(x, mean, std)`` triples to
    draw a shaded band of one standard deviation around the mean (for example over training seeds). One
    agent's points are all pairs or all triples; they are sorted by x before drawing.
    """
    if not curves:
        raise ValueError("plot_learning_curves needs at least one curve")
    figure = Figure(figsize=(6.4, 4.2), dpi=110, layout="constrained")
    axis = figure.subplots()
    for name, points in curves.items():
        if len(points) == 0:
            raise ValueError(f"curve {name!r} has no points")
        arity = len(points[0])
        if arity not in (2, 3) or any(len(point) != arity for point in points):
            raise ValueError(f"curve {name!r}: points must all be (x, y) pairs or all (x, mean, std) triples")
        values = np.array(
            [[_finite(v, f"curve {name!r} point {i}") for v in point] for i, point in enumerate(points)]
        )
        values = values[np.argsort(values[:, 0], kind="stable")]
        (line,) = axis.plot(
            values[:, 0], values[:, 1], marker="o" if len(values) < 30 else None, label=str(name)
        )
        if arity == 3:
            if (values[:, 2] < 0).any():
                raise ValueError(f"curve {name!r}: standard deviations must be non-negative")
            axis.fill_between(
                values[:, 0], values[:, 1] - values[:, 2], values[:, 1] + values[:, 2],
                color=line.get_color(), alpha=0.2, linewidth=0,
            )  # fmt: skip
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend()
    if title:
        axis.set_title(title)
    return _save_figure(figure, path)
