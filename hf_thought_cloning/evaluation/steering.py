"""Steering: the agent acting on thoughts it did not write.

* ``ThoughtInjection(thought, start, stop)`` (from ``hf_thought_cloning.rollouts``): a fixed thought at steps
  ``start <= step < stop``; ``parse_steps("0:10")`` reads the command line's ``--steps``.
* Oracle mode (``OracleThoughts``): ``ThoughtBot`` runs beside every environment in advising mode (told the
  action the agent actually took) and its thought is fed to the lower level. If the bot gives up (e.g. the
  agent opened a box), the episode goes on with the agent's own thoughts and an ``oracle`` event is recorded.
* ``evaluate_steering`` compares success with the agent's own thoughts against oracle thoughts (and, when a
  thought is given, against that injected thought) on the same seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

from hf_thought_cloning.evaluation.suites import summarize
from hf_thought_cloning.rollouts import (
    EpisodeRecord,
    OracleThoughts,
    ThoughtInjection,
    check_injection_steps,
    run_episodes,
)

__all__ = ["episodes_changed", "evaluate_steering", "parse_steps", "summarize_steering"]


def parse_steps(text: str | None) -> tuple[int, int | None]:
    """``"START:STOP"`` (either may be empty), ``"all"`` or None -> (start, stop or None for the end)."""
    if text is None or text.strip() in ("", "all", ":"):
        return 0, None
    start_text, separator, stop_text = text.partition(":")
    try:
        if not separator:
            step = int(text)  # one step
            return step, step + 1
        start = int(start_text) if start_text.strip() else 0
        stop = int(stop_text) if stop_text.strip() else None
    except ValueError:
        raise ValueError(f"steps {text!r} must be START:STOP, START:, :STOP, one step, or 'all'") from None
    check_injection_steps(start, stop)
    return start, stop


def episodes_changed(reference: Sequence[EpisodeRecord], steered: Sequence[EpisodeRecord]) -> float:
    """Share of episodes (same seeds) whose action sequence differs between two runs."""
    if not reference:
        return 0.0
    changed = sum(
        [s.action for s in a.steps] != [s.action for s in b.steps]
        for a, b in zip(reference, steered, strict=True)
    )
    return changed / len(reference)


def evaluate_steering(
    model,
    processor,
    level: str,
    seeds: Sequence[int],
    *,
    thought: str | None = None,
    steps: tuple[int, int | None] = (0, None),
    **rollout_options,
) -> tuple[dict, dict[str, list[EpisodeRecord]]]:
    """Summaries (and records) of the agent with its own thoughts, with oracle thoughts, and with
    ``thought`` injected at ``steps`` when given; all on ``seeds`` with the same action noise."""
    runs = {
        "own": run_episodes(model, processor, level, seeds, **rollout_options),
        "oracle": run_episodes(model, processor, level, seeds, steering=OracleThoughts(), **rollout_options),
    }
    if thought is not None:
        injection = ThoughtInjection(thought, *steps)
        runs["injected"] = run_episodes(model, processor, level, seeds, steering=injection, **rollout_options)
    return summarize_steering(runs, thought, steps), runs


def summarize_steering(
    runs: dict[str, list[EpisodeRecord]], thought: str | None = None, steps: tuple[int, int | None] = (0, None)
) -> dict:
    """The steering summary of the ``own``, ``oracle`` (and ``injected``) runs of the same seeds: each run's
    summary, the episodes in which the oracle gave up, the share of episodes whose actions changed, and
    ``oracle_minus_own`` (the success the demonstrator's thoughts add)."""
    summary: dict = {name: summarize(records) for name, records in runs.items()}
    summary["oracle"]["oracle_gave_up"] = sum(
        any(event["detector"] == "oracle" for event in record.events) for record in runs["oracle"]
    )
    summary["oracle"]["episodes_changed"] = episodes_changed(runs["own"], runs["oracle"])
    if "injected" in runs:
        summary["injected"].update(
            thought=thought,
            steps=[steps[0], steps[1]],
            episodes_changed=episodes_changed(runs["own"], runs["injected"]),
        )
    summary["oracle_minus_own"] = summary["oracle"]["success_rate"] - summary["own"]["success_rate"]
    return summary
