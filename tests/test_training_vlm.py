"""train/run.py --variant vlm, end to end for each VLM family (tiny random VLMs saved as pretrained folders):
train (teacher-forced epoch, then an epoch on the VLM's own thoughts), validate, save, reload, evaluate every
suite with ``python -m hf_thought_cloning.evaluate``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, TINY_LEVEL, run_cli, train, trainer_log
from safetensors.torch import load_file
from tiny_vlms import FAMILIES, save_tiny_vlm
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

import hf_thought_cloning  # noqa: F401  (registers the Auto classes)
from dataset_builder.episodes import make_env, reset_quietly
from hf_thought_cloning.training.vlm import vision_tower

# Per family, a variation that the others leave out: LoRA (LLaVA), the chat template (Idefics3).
EXTRA_ARGS = {"llava": ("--vlm_lora_rank", "2"), "idefics3": ("--vlm_chat_template",), "qwen2_vl": ()}
VLM_ARGS = ("--variant", "vlm", "--epochs", "2", "--stop_teacher_forcing_epoch", "1", "--validation_every_epochs", "1",
            "--vlm_max_new_tokens", "4", "--learning_rate", "0.01")  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_vlm_variant_trains_validates_saves_reloads_and_evaluates(generated_folder, tmp_path, family):
    pretrained = save_tiny_vlm(tmp_path / f"tiny-{family}", family)
    output = tmp_path / "run"
    done = train(generated_folder, output, *VLM_ARGS, "--vlm_model", str(pretrained), *EXTRA_ARGS[family])
    assert "vision tower frozen" in done.stdout or "LoRA rank 2" in done.stdout
    entries = trainer_log(output)
    ratios = [e["train/teacher_forcing_ratio"] for e in entries if "train/loss" in e]
    assert ratios == [1.0, 1.0, 0.0, 0.0]  # an epoch on the demonstrator's thoughts, one on the VLM's own
    thought_losses = [e["train/thought_loss"] for e in entries if "train/thought_loss" in e]
    assert len(thought_losses) == 4 and thought_losses[-1] < thought_losses[0]
    assert len([e for e in entries if "validation/success_rate" in e]) == 2
    folder = output / "model"
    assert (folder / "vlm_prompter" / "prompter_config.json").is_file()
    settings = json.loads((folder / "vlm_prompter" / "prompter_config.json").read_text())
    assert settings["use_chat_template"] == (family == "idefics3")
    weights = load_file(folder / "model.safetensors")
    assert not [
        key for key in weights if "lora" in key
    ]  # LoRA is saved merged: the folder loads without peft
    model = AutoModel.from_pretrained(folder, trust_remote_code=False).eval()
    # The vision tower is frozen (the default): its weights are the pretrained ones; the language model trained.
    original = AutoModelForImageTextToText.from_pretrained(pretrained).state_dict()
    trained = model.vlm.state_dict()
    tower_name, _ = vision_tower(model.vlm)
    tower = [key for key in original if key.startswith(tower_name + ".")]
    assert tower and all(torch.equal(trained[key], original[key]) for key in tower)
    language = [key for key in original if "layers.0.self_attn.q_proj.weight" in key and key not in tower]
    assert language and all(not torch.equal(trained[key], original[key]) for key in language)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
    assert model.vlm_prompter is not None and model.vlm_prompter.use_chat_template == (family == "idefics3")
    observation, _ = reset_quietly(make_env(TINY_LEVEL), 123)
    step = model.act(processor(observation), model.initial_memory(1), sample=False)
    assert step.actions.shape == (1,) and isinstance(step.thoughts[0], str)

    evaluation = tmp_path / "evaluation"
    run_cli(
        "hf_thought_cloning.evaluate", "--model", str(folder), "--suite", "all", "--episodes", "1", "--num-envs", "4",
        "--max-steps", "4", "--output", str(evaluation), "--thought", "go to red ball", "--steps", "0:2",
        "--update-card",
    )  # fmt: skip
    suites = json.loads((evaluation / "evaluation.json").read_text())["suites"]
    assert set(suites) == {"in-distribution", "ood", "fads", "precrime", "steering"}
    card = (folder / "README.md").read_text()
    assert "vision-language model" in card and "model-index" in card


def test_vlm_options_are_checked_before_anything_loads(generated_folder, tmp_path):
    for args, message in (
        (("--variant", "vlm"), "--variant vlm needs --vlm_model"),
        (("--vlm_lora_rank", "4"), "--vlm_lora_rank apply to --variant vlm only"),
        (("--variant", "vlm", "--vlm_model", str(tmp_path / "nowhere")), "--vlm_model .*cannot load the VLM"),
    ):
        done = train(generated_folder, tmp_path / "run", *args, check=False)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and __import__("re").search(message, done.stderr), (
            done.stderr
        )
        assert not (tmp_path / "run").exists()


def test_vlm_folder_loads_through_remote_code_without_the_package(tmp_path):
    """A saved VLM agent (weights, config, prompter) loads with trust_remote_code=True where neither
    hf_thought_cloning nor dataset_builder can be imported, and writes the same thoughts."""
    from hf_thought_cloning import ThoughtCloningModel, ThoughtCloningProcessor, ThoughtCloningTokenizer

    pretrained = save_tiny_vlm(tmp_path / "tiny-qwen2_vl", "qwen2_vl")
    torch.manual_seed(0)
    model = ThoughtCloningModel.from_vlm(str(pretrained), vlm_max_new_tokens=4, image_dim=16, text_dim=32,
                                         memory_dim=48, actor_hidden_dim=16, num_attention_heads=2).eval()  # fmt: skip
    folder = tmp_path / "agent"
    model.save_pretrained(folder)
    ThoughtCloningProcessor(ThoughtCloningTokenizer()).save_pretrained(folder)
    observation = {
        "image": reset_quietly(make_env(TINY_LEVEL), 5)[0]["image"].tolist(),
        "mission": "go to the red ball",
    }
    processor = ThoughtCloningProcessor(ThoughtCloningTokenizer())
    import numpy as np

    expected = model.act(
        processor({**observation, "image": np.array(observation["image"])}), sample=False
    ).thoughts
    script = f"""
import sys
sys.modules["hf_thought_cloning"] = None  # the package cannot be imported
sys.modules["dataset_builder"] = None
import json, numpy as np
from transformers import AutoModel, AutoProcessor
folder = {str(folder)!r}
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
observation = json.loads({json.dumps(json.dumps(observation))})
observation["image"] = np.array(observation["image"], dtype=np.uint8)
print(json.dumps(model.act(processor(observation), sample=False).thoughts))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin",
             "PYTHONPATH": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected
    assert REPO_ROOT.is_dir()
