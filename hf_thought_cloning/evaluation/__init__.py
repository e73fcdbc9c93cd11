"""Evaluation of Thought Cloning agents: suites, FADS, steering and reports.

Submodules are imported on use (``replays`` pulls in matplotlib, ``build_suites`` the thought bot), so this
package import stays cheap. The command line is ``python -m hf_thought_cloning.evaluate``.
"""
