"""The thought-trajectory dataset schema (one row per episode), versioned.

Version history:
* 1.0.0: first release.
"""

from __future__ import annotations

from datasets import Array4D, Features, List, Value

SCHEMA_VERSION = "1.0.0"

FEATURES = Features(
    {
        "level": Value("string"),
        "seed": Value("int64"),
        "mission": Value("string"),
        "images": Array4D(shape=(None, 7, 7, 3), dtype="uint8"),
        "directions": List(Value("int8")),
        "actions": List(Value("int8")),
        "thoughts": List(Value("string")),
        "noisy": List(Value("bool")),
        "reward": Value("float32"),
        "success": Value("bool"),
        "num_steps": Value("int32"),
        "max_steps": Value("int32"),
    }
)

# Per-step columns: each holds exactly ``num_steps`` entries.
STEP_COLUMNS = ("images", "directions", "actions", "thoughts", "noisy")

# Column documentation, rendered into the dataset card's schema table.
COLUMN_DOCS = {
    "level": "BabyAI level id, e.g. `BabyAI-MiniBossLevel-v0`",
    "seed": "`env.reset(seed=seed)` regenerates the episode's level exactly",
    "mission": "the natural-language mission",
    "images": "egocentric 7x7 symbolic observation per step (object id, colour id, state), before the action",
    "directions": "agent direction per step (0 right, 1 down, 2 left, 3 up)",
    "actions": "action per step (0 left, 1 right, 2 forward, 3 pickup, 4 drop, 5 toggle, 6 done)",
    "thoughts": "the demonstrator's thought per step: the intent behind that step's action",
    "noisy": "True where the action was random noise (and the thought a random plausible one)",
    "reward": "episode return, `1 - 0.9 * num_steps / max_steps` on success",
    "success": "reward > 0 (only successful bot demonstrations are stored; failures are counted in the card)",
    "num_steps": "number of steps (length of every per-step column)",
    "max_steps": "the environment's step limit for this episode",
}
