"""What a run will cost, per device: the time and peak memory of each step, from the tokens it processes.

A step's work is counted in FLOPs (2 × parameters per token forward, 3× that with the backward pass; the LM head
where logits are computed; the SAE's encoder and decoder for sparse vectors) and, for generation, in weight reads
per decoded token (decoding is memory-bound). Devices turn that into seconds:

- `cpu`: this machine's kind (2 cores, fp32), measured here: 412 tok/s forward on SmolLM2-135M (8 × 128 tokens,
  2 × 134.5M FLOPs a token, so 1.1e11 FLOP/s) and 11 generated tok/s unbatched (5.9 GB/s of weights read).
- `h100`: assumed, not measured (no GPU was lent when this was written): 989 TFLOP/s dense bf16 at 40 % utilisation
  and 3.35 TB/s at 70 %, 80 GB.

Decoding, per engine (`engine` of the run config). A decoding step reads the weights once for the whole batch, so a
token costs max(weight reads / batch, its FLOPs), and a step is a call (kernel launches on a GPU):
- `hf` (transformers with hooks): the run's `batch_size`; `auto` generates 32 at a time on the CPU (plan.eval_batch_size) and
  assumed 32 on a GPU (lm-eval's auto probes at the model's full length, so it lands well under its cap of 64 for
  long-context models).
- `vllm`: continuous batching keeps up to 256 sequences decoding together on a GPU (vLLM's default max_num_seqs);
  eager, as steering needs, so each step pays its launches, but over 8x the sequences. On the paper's study
  (configs/paper.yaml, gemma-2-2b) this makes a GPU's decoding 8x faster than transformers at 32 and its
  evaluations 3.4x (7.5 h -> 2.2 h: log-likelihood requests are not sped up); EasySteer reports 10.8-22.3x over
  hook-based frameworks, with CUDA graphs that hooks rule out, so 8x is kept below it. On the CPU, decoding is
  compute-bound already at 32, so
  vLLM is modelled as measured (FINDINGS 2026-12-03, SmolLM2 fp32): ~2x transformers' best batch (601-678 against
  298-332 tokens/s at 64; P8 measured 2.78x, steered, on longer prompts). Log-likelihood requests cost the same on both (prefill is compute-bound; vLLM's prefix
  cache, which scores an MCQ's shared question once, is not counted).

Data sizes come from the run's data where it can be read locally and from stated assumptions where it cannot (the
paper's dataset: 45,000 items over 15 contexts, a quarter held out; MMLU: 14,042 test items, 0-shot prompts of ~200
tokens).
An estimate, not a promise: it is within a factor of 2-3 on the default model (`yapo-bench run --dry-run` vs P6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from yapo_bench.families import CultureSizes, WorkSizes, behaviours, get_family
from yapo_bench.methods import get_method
from yapo_bench.pipeline.config import RunConfig
from yapo_bench.pipeline.plan import CPU_AUTO_BATCH_SIZE, EvalStep, JudgeStep, LayersStep, Plan, Step, TrainStep

GIB = 2**30


@dataclass(frozen=True)
class ModelShape:
    layers: int
    d_model: int
    vocab: int
    params: int  # total, embeddings included
    embedding: int  # input embedding parameters (not run per token)
    kv_dim: int  # width of K (or V) per layer: key-value heads × head dimension

    def body_params(self, last_layer: int | None = None) -> float:
        """Decoder parameters per token, of layers 0..last_layer (all by default)."""
        body = self.params - self.embedding
        return body if last_layer is None else body * (last_layer + 1) / self.layers

    @property
    def head_params(self) -> int:
        return self.d_model * self.vocab


# Shapes of the presets and the paper's models, from their configs (so a dry run loads nothing).
KNOWN_SHAPES = {
    "smollm2-135m": ModelShape(30, 576, 49_152, 134_515_008, 28_311_552, 192),
    "gemma3-270m": ModelShape(18, 640, 262_144, 268_098_176, 167_772_160, 256),
    "google/gemma-2-2b-it": ModelShape(26, 2304, 256_000, 2_614_341_888, 589_824_000, 1024),
    "google/gemma-3-270m-it": ModelShape(18, 640, 262_144, 268_098_176, 167_772_160, 256),
}


def model_shape(source: str) -> ModelShape | None:
    """A model's shape: known, else from its config (a local directory, or the HF cache, offline); None when
    neither says."""
    if source in KNOWN_SHAPES:
        return KNOWN_SHAPES[source]
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_dim = getattr(text, "num_key_value_heads", heads) * head_dim
    d, inner = text.hidden_size, text.intermediate_size
    per_layer = 2 * d * heads * head_dim + 2 * d * kv_dim + 3 * d * inner
    embedding = text.vocab_size * d
    return ModelShape(text.num_hidden_layers, d, text.vocab_size, embedding + text.num_hidden_layers * per_layer,
                      embedding, kv_dim)


@dataclass(frozen=True)
class Device:
    name: str
    flops: float  # effective FLOP/s on batched forward and backward passes
    bandwidth: float  # effective bytes/s of weight reads when decoding
    memory: float  # bytes
    bytes_per_param: int
    auto_batch: int  # what `batch_size: auto` means for transformers here
    vllm_batch: int  # sequences vLLM's continuous batching decodes together
    vllm_speedup: float  # vLLM's decoding against transformers at the same batch (its kernels, no padding)
    basis: str
    # the least a model call takes however small the model: kernel launches of an eager forward on a GPU (the CPU
    # figure is already inside its measured FLOP/s)
    call_seconds: float = 0.0


DEVICES = {
    "cpu": Device("cpu (2 cores, fp32)", 1.1e11, 5.9e9, 24 * GIB, 4, CPU_AUTO_BATCH_SIZE, 64, 2.0,
                  "measured on this machine's kind"),
    "h100": Device("1x H100 80GB (bf16)", 0.40 * 989e12, 0.70 * 3.35e12, 80e9, 2, 32, 256, 1.0, "assumed",
                   call_seconds=0.02),
}


def decode_batch(config: RunConfig, device: Device, engine: str | None = None) -> tuple[int, float]:
    """(sequences decoded together, speed-up over transformers at that batch) of `engine` (default: the run's) on
    `device`."""
    if (engine or config.engine) == "vllm":
        return device.vllm_batch, device.vllm_speedup
    return (device.auto_batch if config.batch_size == "auto" else int(config.batch_size)), 1.0


@dataclass(frozen=True)
class Workload:
    """The data a step processes (tokens, items), as the cost model needs it."""

    flops: float = 0.0
    decoded_tokens: int = 0  # tokens generated one step at a time (memory-bound)
    peak_extra: float = 0.0  # bytes beside the weights and the SAE (caches, logits, KV)
    verdicts: int = 0
    calls: float = 0.0  # forward or backward passes of the model (each at least `Device.call_seconds`)


@dataclass(frozen=True)
class Estimate:
    seconds: float
    peak_bytes: float


def estimate(work: Workload, shape: ModelShape, device: Device, sae_latents: int, judge_seconds: float,
             batch: tuple[int, float] = (1, 1.0)) -> Estimate:
    """`batch`: `decode_batch`'s (sequences decoded together, speed-up) of the run's engine on `device`."""
    weights = shape.params * device.bytes_per_param
    sae = 2 * shape.d_model * sae_latents * 4 if sae_latents else 0
    sequences, speedup = batch
    # a decoded token: its share of one read of the weights, or its own FLOPs once the batch makes that the larger
    per_token = max(weights / device.bandwidth / sequences, 2 * (shape.params - shape.embedding) / device.flops)
    decode = work.decoded_tokens * per_token / speedup
    calls = work.calls + work.decoded_tokens / sequences  # a decoding step is a call too
    seconds = max(work.flops / device.flops + decode, calls * device.call_seconds) + work.verdicts * judge_seconds
    return Estimate(seconds, weights + sae + work.peak_extra * device.bytes_per_param / 4)


def culture_sizes(config: RunConfig) -> CultureSizes:
    """From the run's culture data when it can be read locally, else the paper dataset's stated sizes."""
    from yapo_bench.data.culture_sources import culture_items, is_local_culture_data

    if is_local_culture_data(config.culture_data):
        items = culture_items(config.culture_data, config.data_dir)
        mine = [i for i in items if i.country in config.countries] or items
        per_country = len(mine) / max(1, len({i.country for i in mine}))
        options = sum(len(i.options) for i in mine) / len(mine)
        prompt = sum(len(i.mcq_prompt) for i in mine) / len(mine) / 4  # ~4 characters a token
        option = sum(len(o) for i in mine for o in i.options) / sum(len(i.options) for i in mine) / 4
        pairs = per_country * 0.75 * (1 if config.rejected == "model" else max(1, options - 2))
        return CultureSizes(round(pairs), max(1, round(per_country * 0.25 / 2)), round(prompt) + 30,
                            round(option) + 1, round(options), round(prompt) + 30, f"counted in {config.culture_data}")
    pairs = 3000 * 0.75 * (1 if config.rejected == "model" else 3)
    return CultureSizes(round(pairs), 375, 150, 12, 5, 120,
                        "assumed for the paper's dataset: 3,000 items a context, a quarter held out, 150-token prompts")


def step_workload(step: Step, plan: Plan, shape: ModelShape, sizes: WorkSizes, layer: int,
                  sae_latents: int) -> Workload:
    """The work of one planned step; an evaluation's and a judge's from what each task family declares an item
    costs."""
    config = plan.config
    forward = 2 * (shape.body_params() + shape.head_params)  # a scored token: logits at every position
    culture = sizes.culture
    if isinstance(step, TrainStep):
        method = get_method(step.method)
        pairs = behaviours.AB_ITEMS * 4 if step.unit.kind == "behaviour" else culture.train_pairs
        tokens = culture.prompt_tokens + culture.option_tokens
        sae = 2 * 2 * shape.d_model * sae_latents if method.SPARSE else 0
        if not method.LEARNED:  # each pair's prompt once, two responses, to layer L
            flops = pairs * (tokens + culture.option_tokens) * 2 * shape.body_params(layer) + pairs * 2 * tokens * sae
            return Workload(flops=flops, calls=pairs / 8 * 2)
        visited = min(2 * pairs, config.training.steps * config.training.batch_size * 2)
        after = shape.body_params() - shape.body_params(layer)
        per_step = config.training.batch_size * 2 * tokens * (3 * 2 * after + 3 * sae) \
            + config.training.batch_size * 2 * culture.option_tokens * 3 * 2 * shape.head_params
        cache = visited * tokens * (2 * shape.body_params(layer) + forward)
        return Workload(flops=config.training.steps * per_step + cache,
                        peak_extra=visited * tokens * shape.d_model * 4,
                        # forward and backward a step; a forward per cached sequence
                        calls=config.training.steps * 3 + visited)
    if isinstance(step, EvalStep):
        works = [get_family(task.family).work(task, sizes) for task in step.tasks]
        # a prompted evaluation reads its instruction in front of every request (about 4 characters a token)
        instructed = len(step.inputs.get("instruction", {}).get("text", "")) / 4 * sum(w.calls for w in works)
        return Workload(flops=(sum(w.scored_tokens for w in works) + instructed) * forward,
                        decoded_tokens=round(sum(w.decoded_tokens for w in works)),
                        peak_extra=max((8 * w.prompt_tokens * shape.vocab * 4 for w in works), default=0.0),
                        calls=sum(w.calls for w in works))
    if isinstance(step, JudgeStep):
        tasks = plan[step.needs[0]].tasks
        return Workload(verdicts=round(sum(get_family(t.family).work(t, sizes).items for t in tasks
                                           if get_family(t.family).judged)))
    if isinstance(step, LayersStep):
        pairs = min(culture.test_items * 4, 48) * len(config.countries)
        return Workload(flops=pairs * shape.layers * culture.options * culture.prompt_tokens * forward)
    return Workload()


def judge_seconds(config: RunConfig) -> float:
    """Seconds a verdict takes: measured 1.6 s on the local 135M judge; a served judge assumed at 0.2 s per request
    per connection, over its `concurrency` connections."""
    if config.judge is None:
        return 0.0
    return 1.6 if config.judge.local else 0.2 / max(1, config.judge.concurrency) * 4


def plan_costs(plan: Plan, layer: int | None, sae_latents: int,
               engine: str | None = None) -> tuple[dict[str, list[Estimate]], str]:
    """{device: [Estimate per step]} and what the data sizes rest on; empty when the model's shape is unknown.
    `engine`: the evaluations' engine (default: the run's), so a dry run can say what the other would cost."""
    config = plan.config
    shape = model_shape(config.model)
    if shape is None:
        return {}, f"no cost estimate: the shape of {config.model} is unknown here (not a preset, not cached)"
    sizes = WorkSizes(culture_sizes(config), config.limit, config.mmlu_limit, config.max_gen_toks,
                      config.num_fewshot)
    layer = layer if layer is not None else shape.layers // 2
    verdict = judge_seconds(config)
    costs = {name: [estimate(step_workload(step, plan, shape, sizes, layer, sae_latents), shape, device,
                             sae_latents, verdict, decode_batch(config, device, engine) if isinstance(step, EvalStep)
                             else (1, 1.0)) for step in plan] for name, device in DEVICES.items()}
    return costs, sizes.culture.basis


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 48 * 3600 else f"{seconds / 86400:.1f} d"


def peak(estimates: list[Estimate]) -> float:
    return max((e.peak_bytes for e in estimates), default=0.0)


def fits(device: str, estimates: list[Estimate]) -> bool:
    return peak(estimates) <= DEVICES[device].memory


def total_seconds(estimates: list[Estimate], done: list[bool]) -> float:
    return math.fsum(e.seconds for e, finished in zip(estimates, done) if not finished)


def parallel_seconds(plan: Plan, estimates: list[Estimate], done: list[bool], workers: int) -> tuple[float, float]:
    """(wall time, critical path) of the steps left when `workers` workers carry them out as the cluster executor
    does: whenever a worker is free it takes the first step in plan order whose upstream steps have finished; judge
    steps run beside the workers, one at a time on the judge server; the report runs last. The critical path is
    the longest chain of dependent steps left: the wall time that no number of workers can beat."""
    left = {step.key: e.seconds for step, e, finished in zip(plan, estimates, done) if not finished}
    chain: dict[str, float] = {}
    for step in plan:  # the plan lists every step after those it reads
        if step.key in left:
            chain[step.key] = left[step.key] + max((chain.get(need, 0.0) for need in step.needs), default=0.0)
    pending = [step for step in plan if step.key in left]
    ends: dict[str, float] = {}  # when each started step finishes
    running: list[Step] = []
    now, idle, judge_idle = 0.0, workers, True
    while pending or running:
        for step in [s for s in running if ends[s.key] <= now]:  # finished: its worker (or the judge) is free
            running.remove(step)
            idle, judge_idle = (idle, True) if isinstance(step, JudgeStep) else (idle + 1, judge_idle)
        for step in list(pending):
            if any(need in left and ends.get(need, math.inf) > now for need in step.needs):
                continue
            if isinstance(step, JudgeStep) and judge_idle:
                judge_idle = False
            elif step.KIND == "report" and pending == [step] and not running:
                pass  # beside no worker, after everything else
            elif not isinstance(step, JudgeStep) and step.KIND != "report" and idle:
                idle -= 1
            else:
                continue
            ends[step.key] = now + left[step.key]
            pending.remove(step)
            running += [step] if step.KIND != "report" else []
        if not running:
            break
        now = min(ends[s.key] for s in running)
    return max(ends.values(), default=0.0), max(chain.values(), default=0.0)
