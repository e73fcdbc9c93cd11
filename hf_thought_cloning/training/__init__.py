"""Reusable pieces of the trainer (``train/run.py``): schedules, episode batching, checkpoints."""
