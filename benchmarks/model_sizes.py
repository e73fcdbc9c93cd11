"""Model sizes shared by the benchmarks (keyword arguments of ThoughtCloningConfig / train/run.py)."""

MODEL_SIZES = {
    "paper": {},  # the config defaults are the paper's (image 128, text 256, memory 2048)
    "small": {"image_dim": 64, "text_dim": 64, "memory_dim": 256, "actor_hidden_dim": 64},
    "tiny": {"image_dim": 16, "text_dim": 32, "memory_dim": 48, "actor_hidden_dim": 16, "num_attention_heads": 2},
    # train/configs/quickstart.yaml
    "quickstart": {"image_dim": 32, "text_dim": 64, "memory_dim": 128, "actor_hidden_dim": 64, "num_attention_heads": 2},
}
