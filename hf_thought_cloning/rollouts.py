"""Batched rollouts of a Thought Cloning (or BC) model in BabyAI environments.

``run_episodes(model, processor, level, seeds)`` plays one episode per seed with up to ``num_envs``
environments stepping together and one ``model.act`` call per step. A finished environment is refilled
with the next seed and its memory row reset; when no seeds are left, its row is dropped from the batch.

Every episode is a function of (model, level, seed, action_seed, steering) alone, whatever else shares the
batch: sampled actions use the Gumbel-max trick, ``argmax(log_probs + gumbel)``, with the noise drawn from
``np.random.default_rng([action_seed, seed])`` of that episode (never a shared torch generator, whose draws
would depend on the other rows of the batch).

Steering replaces the thought the lower level reads: ``ThoughtInjection`` (a fixed thought, at chosen steps
or the whole episode) or ``OracleThoughts`` (``ThoughtBot`` runs beside each environment in advising mode,
is told the action the agent actually took, and its thought is injected). A precrime ``monitor`` sees the
thought before the action executes and can halt the episode; ``detectors`` report environment events
(e.g. a purple door opened) independently of any thought.

``EpisodeSession`` plays one episode a step at a time with the same code, for a person watching (the demo):
steering and the monitor may change between steps, and the demonstrator's thought is known at every step.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from dataset_builder.episodes import make_env, reset_quietly
from hf_thought_cloning.layers_thought_cloning import pad_positions, pad_to_width

__all__ = [
    "EpisodeRecord",
    "EpisodeSession",
    "EventDetector",
    "OracleThoughts",
    "StepRecord",
    "ThoughtInjection",
    "ThoughtMonitor",
    "check_injection_steps",
    "mean_length",
    "run_episodes",
    "success_rate",
    "thought_statistics",
]

THOUGHT_SOURCES = ("generated", "injected", "oracle", "none")
EPISODE_TRACE_FORMAT = "hf-thought-cloning/episode-trace"  # EpisodeSession.to_json()


@dataclass
class StepRecord:
    thought: str | None  # the thought the lower level acted on (None for a BC model)
    thought_source: str  # one of THOUGHT_SOURCES
    action: int
    reward: float
    image: np.ndarray | None = None  # (7, 7, 3) uint8 observation, when record_observations
    frame: np.ndarray | None = None  # RGB render of the env before the action, when record_frames
    halted: bool = False  # the precrime monitor stopped the agent here: the action was NOT executed


@dataclass
class EpisodeRecord:
    level: str
    seed: int
    mission: str
    success: bool
    length: int  # steps executed (a halted step is recorded but not executed, so not counted)
    reward: float
    halted: bool  # stopped by the monitor
    steps: list[StepRecord] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # detector events: {"detector", "step", ...}

    def readable_trace(self) -> str:
        """The project's thought trace (mission, then one line per thought with its actions) of the executed
        steps, and a last line for the step the monitor halted."""
        from dataset_builder.traces import ACTION_NAMES, format_trace

        executed = [step for step in self.steps if not step.halted]
        text = format_trace(
            self.mission, [step.thought or "" for step in executed], [step.action for step in executed]
        )
        for step in self.steps[len(executed) :]:  # the halted step, in the trace's layout
            action = ACTION_NAMES[step.action]
            text += (
                f"\n  steps {self.length:>7}  {step.thought} [halted]\n  {'':13}  -> ({action} not executed)"
            )
        return text

    def to_json(self) -> dict:
        """The episode as JSON-able data: everything but the observations and frames, actions also by name."""
        from dataset_builder.traces import ACTION_NAMES

        data = {name: getattr(self, name) for name in ("level", "seed", "mission", "success", "length")}
        data.update(reward=self.reward, halted=self.halted, events=self.events)
        data["steps"] = [
            {"step": index, "thought": step.thought, "thought_source": step.thought_source, "action": step.action,
             "action_name": ACTION_NAMES[step.action], "reward": step.reward, "halted": step.halted}
            for index, step in enumerate(self.steps)
        ]  # fmt: skip
        return data


# ------------------------------------------------------------------------------------------- steering
def check_injection_steps(start: int, stop: int | None) -> None:
    """Raise ValueError unless ``0 <= start < stop`` (``stop=None``: to the end of the episode)."""
    if start < 0 or (stop is not None and stop <= start):
        raise ValueError(f"injection steps must satisfy 0 <= start < stop, got {start}:{stop}")


@dataclass(frozen=True)
class ThoughtInjection:
    """Inject ``thought`` at steps ``start <= step < stop`` (``stop=None``: to the end of the episode)."""

    thought: str
    start: int = 0
    stop: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.thought, str) or not self.thought.replace(",", " ").split():
            raise ValueError(f"an injected thought needs at least one word, got {self.thought!r}")
        check_injection_steps(self.start, self.stop)

    def applies(self, step: int) -> bool:
        return step >= self.start and (self.stop is None or step < self.stop)


@dataclass(frozen=True)
class OracleThoughts:
    """Inject the thought of a ``ThoughtBot`` run beside each environment in advising mode."""


class ThoughtMonitor(Protocol):
    """Precrime: ``match(thought)`` returns a reason (the matched pattern) to halt before acting, or None."""

    def match(self, thought: str | None) -> str | None: ...


class EventDetector(Protocol):
    """An environment event found from the environment's state alone (never from thoughts)."""

    name: str

    def snapshot(self, env: gym.Env) -> Hashable: ...

    def detect(self, before: Hashable, after: Hashable) -> dict | None: ...


# --------------------------------------------------------------------------------------------- slots
@dataclass
class _Slot:
    """One environment of the batch and the episode it is playing."""

    env: gym.Env
    index: int = -1  # position of the episode's seed in ``seeds``
    seed: int = 0
    observation: dict | None = None
    record: EpisodeRecord | None = None
    rng: np.random.Generator | None = None
    bot: Any = None  # ThoughtBot in oracle mode (None once it has given up)
    bot_suggestion: int | None = None
    last_action: int | None = None
    snapshots: list = field(default_factory=list)


def _build_env(level: str, render: bool) -> gym.Env:
    if not render:
        return make_env(level)
    make_env(level).close()  # same unknown-level check and message as without frames
    return gym.make(level, render_mode="rgb_array")


def _start(
    slot: _Slot,
    index: int,
    seed: int,
    level: str,
    action_seed: int,
    oracle: bool,
    detectors,
    max_steps: int | None,
) -> None:
    slot.index, slot.seed = index, int(seed)
    slot.observation, _ = reset_quietly(slot.env, slot.seed)
    if max_steps is not None:  # the level sets its own limit at reset; a cap only lowers it
        slot.env.unwrapped.max_steps = min(slot.env.unwrapped.max_steps, max_steps)
    slot.record = EpisodeRecord(
        level=level,
        seed=slot.seed,
        mission=slot.observation["mission"],
        success=False,
        length=0,
        reward=0.0,
        halted=False,
    )
    slot.rng = np.random.default_rng([action_seed, slot.seed])
    slot.last_action, slot.bot_suggestion = None, None
    slot.bot = None
    if oracle:
        from dataset_builder.thoughts import ThoughtBot  # imported here: only oracle mode needs the bot

        slot.bot = ThoughtBot(slot.env)
    slot.snapshots = [detector.snapshot(slot.env) for detector in detectors]


def _oracle_thought(slot: _Slot) -> str | None:
    """Advance the bot by one step and return its thought; None (and an event) once it cannot advise."""
    if slot.bot is None:
        return None
    # Advising mode, as in data generation: None tells the bot its suggestion was followed.
    taken = None if slot.last_action is None or slot.last_action == slot.bot_suggestion else slot.last_action
    from minigrid.utils.baby_ai_bot import DisappearedBoxError

    from dataset_builder.thoughts import ThoughtTemplateError

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            slot.bot_suggestion = int(slot.bot.replan(taken))
            return slot.bot.thought()
    # The bot's known ways of giving up: minigrid's BabyAIBot asserts when it cannot plan (and raises
    # DisappearedBoxError once a box was opened); our templates raise when they cannot describe its plan.
    # Anything else is a bug, and propagates.
    except (AssertionError, DisappearedBoxError, ThoughtTemplateError) as error:
        slot.record.events.append(
            {"detector": "oracle", "step": slot.record.length, "detail": f"{type(error).__name__}: {error}"}
        )
        slot.bot = None
        return None


def _choose_actions(logits: torch.Tensor, slots: Sequence[_Slot], sample: bool) -> list[int]:
    log_probs = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
    if not sample:
        return [int(row.argmax()) for row in log_probs]
    # Gumbel-max with each episode's own generator: reproducible whatever else is in the batch.
    return [
        int((row + slot.rng.gumbel(size=row.shape[0])).argmax())
        for row, slot in zip(log_probs, slots, strict=True)
    ]


def _act(
    model,
    processor,
    slots: Sequence[_Slot],
    memory,
    injected: list[str | None],
    sample: bool,
    vlm_prompter,
    missions: _MissionRows | None = None,
):
    """One ``model.act`` for all ``slots`` (``injected``: a thought per row, None for the agent's own):
    the model's output, the chosen actions and the thoughts the lower level acted on."""
    inputs = processor([slot.observation for slot in slots])
    inputs = {name: value.to(model.device) for name, value in inputs.items()}
    thought_argument = injected if any(text is not None for text in injected) else None
    mission_features = None if missions is None else (missions.features, missions.mask)
    step = model.act(inputs, memory, thought=thought_argument, sample=False, vlm_prompter=vlm_prompter,
                     mission_features=mission_features)  # fmt: skip
    actions = _choose_actions(step.action_logits, slots, sample)
    thoughts = step.thoughts if step.thoughts is not None else [None] * len(slots)
    return step, actions, thoughts


def _execute(
    slot: _Slot,
    thought: str | None,
    source: str,
    action: int,
    monitor: ThoughtMonitor | None,
    detectors: Sequence[EventDetector],
    record_observations: bool,
    record_frames: bool,
) -> bool:
    """Record one step of ``slot``'s episode and execute ``action``, unless ``monitor`` halts on ``thought``
    (then the step is recorded as halted and the action is not executed); True when the episode is over."""
    record = slot.record
    image = np.array(slot.observation["image"], dtype=np.uint8) if record_observations else None
    frame = slot.env.render() if record_frames else None
    halt_reason = monitor.match(thought) if monitor is not None else None
    if halt_reason is not None:
        record.steps.append(StepRecord(thought, source, action, 0.0, image, frame, halted=True))
        record.halted = True
        record.events.append({"detector": "monitor", "step": record.length, "pattern": halt_reason})
        return True
    slot.observation, reward, terminated, truncated, _ = slot.env.step(action)
    slot.last_action = action
    record.steps.append(StepRecord(thought, source, action, float(reward), image, frame))
    for position, detector in enumerate(detectors):
        after = detector.snapshot(slot.env)
        event = detector.detect(slot.snapshots[position], after)
        if event is not None:
            record.events.append({"detector": detector.name, "step": record.length, **event})
        slot.snapshots[position] = after
    record.length += 1
    record.reward += float(reward)
    if terminated or truncated:
        record.success = bool(terminated and reward > 0)
        return True
    return False


class _MissionRows:
    """Each row's mission, encoded once when its episode starts (a mission does not change within an episode)
    and kept aligned with the batch's rows as the memory is; ``model.act`` then skips the mission encoder,
    the largest text encoding of a step (BossLevel missions run to 30 words)."""

    def __init__(self, model, processor, slots: Sequence[_Slot]):
        self.model, self.processor = model, processor
        self.features, self.mask = self._encode(slots)

    def _encode(self, slots: Sequence[_Slot]) -> tuple[torch.FloatTensor, torch.BoolTensor]:
        ids = self.processor.encode_texts([slot.observation["mission"] for slot in slots], "mission")
        return self.model.encode_missions(ids.to(self.model.device))

    def restart(self, rows: list[int], slots: Sequence[_Slot]) -> None:
        """Encode the missions of the episodes just started in ``rows``."""
        features, mask = self._encode([slots[row] for row in rows])
        width = max(features.shape[1], self.features.shape[1])
        index = torch.as_tensor(rows, dtype=torch.long, device=features.device)
        self.features = pad_positions(self.features, width).index_copy(0, index, pad_positions(features, width))
        self.mask = pad_to_width(self.mask, width, False).index_copy(0, index, pad_to_width(mask, width, False))
        used = self.mask.any(dim=0).nonzero()
        width = int(used.max()) + 1 if used.numel() else 1  # the widest mission still playing
        self.features, self.mask = self.features[:, :width], self.mask[:, :width]

    def select(self, keep: list[int]) -> None:
        rows = torch.as_tensor(keep, dtype=torch.long, device=self.features.device)
        self.features, self.mask = self.features.index_select(0, rows), self.mask.index_select(0, rows)


def _select_rows(memory, keep: list[int]):
    rows = torch.as_tensor(keep, dtype=torch.long, device=memory.lower_hidden.device)
    return type(memory)(**{name: value.index_select(0, rows) for name, value in memory.items()})


def check_steering(model, steering) -> None:
    """Raise ValueError when ``steering`` cannot apply to ``model`` (BC model; words outside the vocabulary)."""
    if steering is None:
        return
    if not isinstance(steering, (ThoughtInjection, OracleThoughts)):
        raise TypeError(f"steering must be a ThoughtInjection, OracleThoughts or None, got {steering!r}")
    if not model.config.has_thought_generator:
        raise ValueError(
            "this model is behavioural cloning (upper_level='none'): it has no thoughts, so there is no thought "
            "to steer; steering needs a Thought Cloning model"
        )
    if isinstance(steering, ThoughtInjection):
        model.text_to_ids([steering.thought])  # raises ValueError naming the words outside the vocabulary


# ------------------------------------------------------------------------------------------- rollouts
def run_episodes(
    model,
    processor,
    level: str,
    seeds: Sequence[int],
    *,
    num_envs: int = 64,
    sample: bool = True,
    action_seed: int = 0,
    record_observations: bool = False,
    record_frames: bool = False,
    steering: ThoughtInjection | OracleThoughts | None = None,
    monitor: ThoughtMonitor | None = None,
    detectors: Sequence[EventDetector] = (),
    progress: bool = False,
    max_steps: int | None = None,
    vlm_prompter: Any = None,
) -> list[EpisodeRecord]:
    """Play one episode per seed of ``level``; records come back in the order of ``seeds``.

    Args:
        model: a `ThoughtCloningModel` (its mode is the caller's business; acting runs without gradients).
        processor: the model's `ThoughtCloningProcessor`.
        num_envs: environments stepping together (one ``model.act`` call per step for all of them).
        sample: sample actions (per-episode Gumbel-max noise from ``[action_seed, seed]``), else argmax.
        record_observations / record_frames: keep each step's (7, 7, 3) view / RGB rendering.
        steering: a ``ThoughtInjection`` or ``OracleThoughts`` (TC models only; ValueError for BC).
        monitor: precrime monitor; when ``monitor.match(thought)`` is not None the episode halts before the
            action executes (the step is recorded with ``halted=True``).
        detectors: environment-event detectors; their events land in ``EpisodeRecord.events``.
        max_steps: lower the level's step limit (episodes are truncated there; quick looks and tests).
        vlm_prompter: needed only for a VLM upper level.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    check_steering(model, steering)
    seeds = [int(seed) for seed in seeds]
    records: list[EpisodeRecord | None] = [None] * len(seeds)
    if not seeds:
        return []
    has_thoughts = model.config.has_thought_generator
    oracle = isinstance(steering, OracleThoughts)
    injection = steering if isinstance(steering, ThoughtInjection) else None
    device = model.device

    step_options = (monitor, detectors, record_observations, record_frames)
    next_index = 0

    def start_next_episode(slot: _Slot) -> None:
        nonlocal next_index
        _start(slot, next_index, seeds[next_index], level, action_seed, oracle, detectors, max_steps)
        next_index += 1

    slots = [_Slot(env=_build_env(level, record_frames)) for _ in range(min(num_envs, len(seeds)))]
    for slot in slots:
        start_next_episode(slot)
    memory = model.initial_memory(len(slots), device=device)
    missions = _MissionRows(model, processor, slots)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seeds), desc=f"{level} rollouts", unit="episode")

    try:
        while slots:
            injected: list[str | None] = [None] * len(slots)
            sources = ["generated" if has_thoughts else "none"] * len(slots)
            for row, slot in enumerate(slots):
                if oracle:
                    thought = _oracle_thought(slot)
                    if thought is not None:
                        injected[row], sources[row] = thought, "oracle"
                elif injection is not None and injection.applies(slot.record.length):
                    injected[row], sources[row] = injection.thought, "injected"
            step, actions, thoughts = _act(
                model, processor, slots, memory, injected, sample, vlm_prompter, missions
            )
            finished = []
            for row, slot in enumerate(slots):
                if _execute(slot, thoughts[row], sources[row], actions[row], *step_options):
                    finished.append(row)

            memory = step.memory
            if finished:
                starts = torch.zeros(len(slots), dtype=torch.bool)
                for row in finished:
                    records[slots[row].index] = slots[row].record
                    if bar is not None:
                        bar.update(1)
                    if next_index < len(seeds):
                        start_next_episode(slots[row])
                        starts[row] = True
                    else:
                        slots[row].env.close()
                        slots[row] = None
                if bool(starts.any()):
                    memory = model.reset_memory(memory, starts.to(device))
                    missions.restart(starts.nonzero()[:, 0].tolist(), slots)
                keep = [row for row, slot in enumerate(slots) if slot is not None]
                if len(keep) < len(slots):
                    slots = [slots[row] for row in keep]
                    if slots:
                        memory = _select_rows(memory, keep)
                        missions.select(keep)
    finally:
        for slot in slots:
            if slot is not None:
                slot.env.close()
        if bar is not None:
            bar.close()
    return records  # type: ignore[return-value]


# ----------------------------------------------------------------------------------- one step at a time
class EpisodeSession:
    """One episode played a step at a time, with steering and the precrime monitor changeable between steps.

    A step is the step of ``run_episodes`` (same helpers): left unchanged, the session plays exactly the
    episode ``run_episodes(model, processor, level, [seed], action_seed=..., sample=...)`` plays. Beside the
    agent the demonstrator (``ThoughtBot``, in advising mode as in oracle steering) runs from the first step,
    so at every step the session knows what the demonstrator thinks in the state the agent acts in, and oracle
    steering can be switched on at any step. When the bot gives up, an ``oracle`` event is recorded and its
    thought is None from then on.

    Args:
        steering: a ``ThoughtInjection`` (steps count from the episode's start) or ``OracleThoughts``;
            change it with ``steer``, or ``inject`` a thought for the next N steps.
        monitor: the precrime monitor; may be replaced (or set to None) between steps.
        detectors: environment-event detectors, as in ``run_episodes``.
        record_frames: keep each step's RGB render (``StepRecord.frame``), for replays.
    """

    def __init__(
        self,
        model,
        processor,
        level: str,
        seed: int,
        *,
        sample: bool = True,
        action_seed: int = 0,
        steering: ThoughtInjection | OracleThoughts | None = None,
        monitor: ThoughtMonitor | None = None,
        detectors: Sequence[EventDetector] = (),
        max_steps: int | None = None,
        record_frames: bool = True,
        vlm_prompter: Any = None,
    ):
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        check_steering(model, steering)
        self.model, self.processor = model, processor
        self.sample, self.action_seed = sample, action_seed
        self.steering, self.monitor = steering, monitor
        self.detectors = list(detectors)
        self.record_frames, self.vlm_prompter = record_frames, vlm_prompter
        self.demonstrator_thoughts: list[str | None] = []  # per step, the bot's thought in that state
        self._slot = _Slot(env=_build_env(level, render=True))  # always renders: the session is watched
        _start(self._slot, 0, seed, level, action_seed, True, self.detectors, max_steps)
        self._memory = model.initial_memory(1, device=model.device)
        self.done = False

    @property
    def record(self) -> EpisodeRecord:
        """The episode so far (``record.steps`` grows by one per ``step``)."""
        return self._slot.record

    def frame(self) -> np.ndarray:
        """The environment now, rendered (RGB uint8)."""
        return self._slot.env.render()

    def steer(self, steering: ThoughtInjection | OracleThoughts | None) -> None:
        """Replace the steering from the next step on (ValueError for a BC model or unknown words)."""
        check_steering(self.model, steering)
        self.steering = steering

    def inject(self, thought: str, steps: int) -> ThoughtInjection:
        """Inject ``thought`` for the next ``steps`` steps (then the agent thinks for itself again)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"an injection lasts at least 1 step, got {steps!r}")
        start = self.record.length
        injection = ThoughtInjection(thought, start, start + steps)
        self.steer(injection)
        return injection

    def step(self) -> StepRecord:
        """Play one step (the monitor may halt it: the action is then not executed and the episode ends)."""
        if self.done:
            raise RuntimeError("the episode is over: start a new session")
        slot, steering = self._slot, self.steering
        demonstrator = _oracle_thought(slot)
        self.demonstrator_thoughts.append(demonstrator)
        injected, source = None, "generated" if self.model.config.has_thought_generator else "none"
        if isinstance(steering, OracleThoughts) and demonstrator is not None:
            injected, source = demonstrator, "oracle"
        elif isinstance(steering, ThoughtInjection) and steering.applies(slot.record.length):
            injected, source = steering.thought, "injected"
        step, actions, thoughts = _act(
            self.model, self.processor, [slot], self._memory, [injected], self.sample, self.vlm_prompter
        )
        self.done = _execute(
            slot, thoughts[0], source, actions[0], self.monitor, self.detectors, False, self.record_frames
        )
        self._memory = step.memory
        return slot.record.steps[-1]

    def to_json(self) -> dict:
        """The episode so far as JSON-able data (``EpisodeRecord.to_json``), each step with what the
        demonstrator thought in that state, and how it was played."""
        data = {"format": EPISODE_TRACE_FORMAT, "version": 1, "model": getattr(self.model, "name_or_path", None),
                "sample": self.sample, "action_seed": self.action_seed, **self.record.to_json()}  # fmt: skip
        for step, thought in zip(data["steps"], self.demonstrator_thoughts, strict=True):
            step["demonstrator_thought"] = thought
        return data

    def close(self) -> None:
        self._slot.env.close()


# -------------------------------------------------------------------------------------------- metrics
def success_rate(records: Sequence[EpisodeRecord]) -> float:
    """Share of successful episodes (0.0 for no episodes)."""
    return sum(record.success for record in records) / len(records) if records else 0.0


def mean_length(records: Sequence[EpisodeRecord]) -> float:
    """Mean number of executed steps per episode (0.0 for no episodes)."""
    return sum(record.length for record in records) / len(records) if records else 0.0


def thought_statistics(records: Sequence[EpisodeRecord], top: int = 5) -> dict | None:
    """What the agent's own thoughts looked like over the executed steps of ``records``: how many steps,
    the share of empty thoughts (the lower level then reads only ``<bos>``: an upper level that always writes
    them has collapsed, and the agent is behavioural cloning in effect), how many distinct thoughts, and the
    ``top`` most frequent with their shares. None when no executed step acted on a generated thought (a BC
    model, or every thought injected)."""
    counts = Counter(
        step.thought
        for record in records
        for step in record.steps
        if not step.halted and step.thought_source == "generated"
    )
    steps = sum(counts.values())
    if not steps:
        return None
    return {
        "steps": steps,
        "empty_share": counts.get("", 0) / steps,
        "distinct": len(counts),
        "most_frequent": [
            {"thought": thought, "share": count / steps}
            for thought, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
        ],
    }
