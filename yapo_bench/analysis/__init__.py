"""Analyses beyond the main benchmark (the paper sketches them; see each module's docstring).

- patching: layer discovery by activation patching, localized → non-localized prompts (paper App. B).
- kl: mean token KL(unsteered ‖ steered) on neutral text, and the multiplier reaching a target KL.
- selection: multiplier selection on a validation split by stable id, reported on a disjoint test split.
- cli: `yapo-bench analyze layers|kl`.
"""
