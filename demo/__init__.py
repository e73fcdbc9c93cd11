"""The interactive demo (Gradio): ``python -m demo`` serves it, ``python -m demo.push`` makes it a Space."""
