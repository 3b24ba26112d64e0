"""Engines that run steered forward passes besides transformers with hooks (the default, in `steering.steer`).

Each engine applies the one steering implementation of `yapo_bench.steering` (`steering_delta`); what an engine adds
is how to reach its model and where its layers' residual stream is. `vllm_engine` is the only module that reads
vLLM's internals; importing it does not import vLLM (which lives in its own venv, `make vllm-setup`).
"""
