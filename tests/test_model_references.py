"""Every upper level computes exactly what it computed before the swappable-component refactor (issue 12):
the shipped checkpoint and seeded tiny models of each variant, against tests/data/model-references.safetensors
(written by tests/model_references.py from the earlier code)."""

from __future__ import annotations

import torch
from model_references import REFERENCES, compute_references
from safetensors.torch import load_file


def test_outputs_are_bit_identical_to_the_recorded_references():
    expected, actual = load_file(REFERENCES), compute_references()
    assert sorted(actual) == sorted(expected)
    different = [key for key in expected if not torch.equal(expected[key], actual[key])]
    assert not different, f"{len(different)} of {len(expected)} outputs changed, e.g. {different[:5]}"
