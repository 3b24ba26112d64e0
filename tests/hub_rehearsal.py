"""A throwaway Hugging Face cache with tiny stand-ins saved under the paper's real hub ids.

`build_hub_cache(hf_home)` fills `hf_home` the way a user who once downloaded the paper's assets would have it,
so that with HF_HOME=hf_home and HF_HUB_OFFLINE=1 the real loaders resolve the real ids with no network:

- `hub/models--google--gemma-2-2b-it`: a random `Gemma2ForCausalLM` (soft-capping and sliding window on,
  16 layers so layer 15 exists) with a small Gemma-style tokenizer trained here and Gemma-2's chat template.
  Its hidden size is the real 2304: sae-lens' `gemma_2` converter does not read shapes from the file, it
  derives d_in from the repo id (`2b` -> 2304) and d_sae from the folder name (`width_65k` -> 65536).
- `hub/models--google--gemma-3-270m-it`: a random `Gemma3ForCausalLM` (gemma3_text, 18 layers, hidden 64).
- `hub/models--google--gemma-scope-2b-pt-res`: `layer_15/width_65k/average_l0_68/params.npz` in Gemma Scope's
  format (W_enc [2304, 65536], W_dec, b_enc, b_dec, threshold; float32). Only LIVE_LATENTS latents have
  weights, the rest are dead (zero encoder column, threshold 1), so the zip-deflated file stays ~1 MB.
- `hub/models--google--gemma-scope-2-270m-it`: `resid_post/layer_9_width_16k_l0_medium/{config.json,
  params.safetensors}` in Gemma Scope 2's format (w_enc [64, 16384], w_dec, b_enc, b_dec, threshold).
- `build_preset_sae_cache` writes, into an HF_HOME of its own, the gemma3-270m preset's registry SAE
  (`gemma-scope-2-270m-pt-res`) at the real model's width (d_in 640), 1,024 latents.
- `hub/datasets--MBZUAI-Paris--Deep-Culture-Lense` (README.md card + data/{train,test}-00000-of-00001.parquet,
  the layout `push_to_hub` writes) and `datasets/MBZUAI-Paris___deep-culture-lense/default/0.0.0/<commit>/`,
  the Arrow cache datasets prepares on a first load. datasets 5.x reads only the latter when offline: in offline
  mode `load_dataset(hub_id)` raises before any hub-cache lookup and falls back to that prepared cache.

Repo ids and SAE paths come from sae-lens' shipped registry, not from memory. Run by hand with
`python tests/hub_rehearsal.py HF_HOME [--full-size]`; --full-size gives gemma-2-2b-it its real shapes (26 layers,
vocabulary 256,000, 2.6B random bf16 weights), which `make gpu-check` times on a GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

GEMMA2_ID = "google/gemma-2-2b-it"
GEMMA3_ID = "google/gemma-3-270m-it"
DATASET_ID = "MBZUAI-Paris/Deep-Culture-Lense"
GEMMA_SCOPE = ("gemma-scope-2b-pt-res", "layer_15/width_65k/average_l0_68")  # the paper's SAE (L0 68)
GEMMA_SCOPE_2 = ("gemma-scope-2-270m-it-res", "layer_9_width_16k_l0_medium")
LIVE_LATENTS = 64
# The reference code names rejected columns `rejected_<model slug>_{mcq,open_ended}`, the slug being the model
# name with every non-alphanumeric run replaced by "_" (YaPO src/data_prep/generate_rejected.py, train.sh).
REJECTED_MODELS = ("gemma_2_2b_it", "gemma_2_9b_it")
SEED = 0

# Gemma-2's chat template as google/gemma-2-2b-it ships it: no system role, alternating user/model turns.
GEMMA2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
# Gemma-3's (text part): a system message is folded into the first user turn instead of being refused.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = \"\" -%}"
    "{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}"
    "{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}{%- elif item['type'] == 'text' -%}"
    "{{ item['text'] | trim }}{%- endif -%}{%- endfor -%}{%- else -%}"
    "{{ raise_exception(\"Invalid content type\") }}{%- endif -%}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)
# Gemma's reserved ids: pad 0, eos 1, bos 2, unk 3, mask 4; the turn markers follow.
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]

# ------------------------------------------------------------------------------------------------------
# The dataset: the paper's column layout, a few of its 15 contexts, localized and non-localized variants.

GROUPS = {  # language group -> its countries, as the paper lists them (options: one per country + western)
    "english": ("usa", "uk", "australia"),
    "arabic": ("egypt", "ksa", "levantine", "morocco"),
    "spanish": ("spain", "mexico", "bolivia"),
    "hindi": ("india", "nepal"),
}
ROW_COUNTRIES = ("usa", "uk", "egypt", "morocco", "mexico", "nepal")
COUNTRY_NAMES = {  # how a localized prompt names the country, in the group's language
    "usa": "the United States", "uk": "the United Kingdom", "egypt": "مصر", "morocco": "المغرب",
    "mexico": "México", "nepal": "नेपाल",
}
LOCALIZED_PREFIX = {"english": "I am from {}. ", "arabic": "أنا من {}. ", "spanish": "Soy de {}. ",
                    "hindi": "मैं {} से हूँ। "}
QUESTIONS = {  # topic -> language group -> question stem
    "breakfast": {"english": "What do we usually eat for breakfast on a weekday?",
                  "arabic": "ماذا نأكل عادة على الفطور في أيام الأسبوع؟",
                  "spanish": "¿Qué desayunamos normalmente entre semana?",
                  "hindi": "हम आमतौर पर सप्ताह के दिनों में नाश्ते में क्या खाते हैं?"},
    "guests": {"english": "What do we offer guests when they first arrive at home?",
               "arabic": "ماذا نقدم للضيوف عند وصولهم إلى البيت؟",
               "spanish": "¿Qué les ofrecemos a los invitados cuando llegan a casa?",
               "hindi": "घर आने पर हम मेहमानों को सबसे पहले क्या देते हैं?"},
    "wedding": {"english": "What is the main dish served at a wedding?",
                "arabic": "ما هو الطبق الرئيسي في حفل الزفاف؟",
                "spanish": "¿Cuál es el plato principal en una boda?",
                "hindi": "शादी में मुख्य व्यंजन क्या परोसा जाता है?"},
    "greeting": {"english": "How do we greet an older relative?",
                 "arabic": "كيف نسلم على قريب كبير في السن؟",
                 "spanish": "¿Cómo saludamos a un familiar mayor?",
                 "hindi": "हम किसी बड़े रिश्तेदार का अभिवादन कैसे करते हैं?"},
    "holiday": {"english": "What do families do on the morning of the biggest holiday of the year?",
                "arabic": "ماذا تفعل العائلات في صباح أكبر عيد في السنة؟",
                "spanish": "¿Qué hacen las familias la mañana de la fiesta más grande del año?",
                "hindi": "साल के सबसे बड़े त्योहार की सुबह परिवार क्या करते हैं?"},
}
TEST_TOPICS = ("holiday",)
ANSWERS = {  # topic -> country (or western) -> the answer that is right for it
    "breakfast": {"usa": "Cereal with milk and coffee", "uk": "Toast with butter and a cup of tea",
                  "australia": "Toast with Vegemite", "egypt": "Ful medames with taameya and baladi bread",
                  "ksa": "Dates with Arabic coffee and shakshuka", "levantine": "Labneh, zaatar and olives",
                  "morocco": "Msemen with honey and mint tea", "spain": "Tostada con tomate y café con leche",
                  "mexico": "Chilaquiles con frijoles", "bolivia": "Api morado con pastel",
                  "india": "Poha with chai", "nepal": "Chiura with tarkari and milk tea",
                  "western": "Scrambled eggs with toast"},
    "guests": {"usa": "A soft drink or a beer", "uk": "A cup of tea and biscuits",
               "australia": "A cold drink", "egypt": "Sweet tea and a glass of water",
               "ksa": "Arabic coffee with dates", "levantine": "Turkish coffee and fruit",
               "morocco": "Mint tea poured from high with cookies", "spain": "Una caña y unas aceitunas",
               "mexico": "Agua fresca y pan dulce", "bolivia": "Un vaso de mocochinchi",
               "india": "Water and masala chai", "nepal": "Water and tea with biscuits",
               "western": "A glass of water"},
    "wedding": {"usa": "A plated dinner of chicken or beef", "uk": "A roast dinner", "australia": "A buffet",
                "egypt": "Fatta with rice and meat", "ksa": "Kabsa with lamb", "levantine": "Mansaf",
                "morocco": "Pastilla and lamb tagine", "spain": "Cochinillo o marisco",
                "mexico": "Mole con arroz", "bolivia": "Picante de pollo",
                "india": "A vegetarian thali", "nepal": "Dal bhat with goat curry",
                "western": "A three-course dinner"},
    "greeting": {"usa": "A hug", "uk": "A handshake", "australia": "A friendly g'day",
                 "egypt": "Kissing their cheeks", "ksa": "Kissing their forehead",
                 "levantine": "Kissing their hand", "morocco": "Kissing their hand and head",
                 "spain": "Dos besos", "mexico": "Un abrazo", "bolivia": "Un beso en la mejilla",
                 "india": "Touching their feet", "nepal": "Namaste with folded hands",
                 "western": "Saying hello"},
    "holiday": {"usa": "Open presents under the tree", "uk": "Open stockings and presents",
                "australia": "A barbecue at the beach", "egypt": "Eid prayer then a visit to family",
                "ksa": "Eid prayer then Arabic coffee with the family", "levantine": "Eid prayer then maamoul",
                "morocco": "Eid prayer then msemen with the family", "spain": "Abrir los regalos de Reyes",
                "mexico": "Desayunar tamales en familia", "bolivia": "Ir a misa en familia",
                "india": "Light diyas and share sweets", "nepal": "Receive tika from elders",
                "western": "Exchange gifts"},
}
# The rejected columns hold the model's own samples; here it always picks the Western control.
REJECTED_MCQ, REJECTED_OPEN_ENDED = "The answer is \\boxed{{{}}}", "{}, like in most places."


def _group_of(country: str) -> str:
    return next(group for group, countries in GROUPS.items() if country in countries)


def paper_rows() -> dict[str, list[dict[str, str]]]:
    """The fixture's rows by split, in Deep-Culture-Lense's columns (gold as \\boxed{k}, k the printed number)."""
    rng = np.random.default_rng(SEED)
    splits: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    for topic, stems in QUESTIONS.items():
        split = "test" if topic in TEST_TOPICS else "train"
        for country in ROW_COUNTRIES:
            group = _group_of(country)
            owners = [*GROUPS[group], "western"]
            order = rng.permutation(len(owners))  # one option order per question, shared by both variants
            options = [ANSWERS[topic][owners[i]] for i in order]
            gold = options.index(ANSWERS[topic][country]) + 1
            wrong = options.index(ANSWERS[topic]["western"]) + 1
            for status in ("localized", "nolocalized"):
                prefix = LOCALIZED_PREFIX[group].format(COUNTRY_NAMES[country]) if status == "localized" else ""
                question = prefix + stems[group]
                row = {
                    "country": country, "localization_status": status,
                    "prompt-mcq": question + "\n" + "\n".join(f"{k}. {o}" for k, o in enumerate(options, 1)),
                    "chosen-mcq": f"\\boxed{{{gold}}}",
                    "prompt_open_ended": question, "chosen_open_ended": ANSWERS[topic][country] + ".",
                }
                for model in REJECTED_MODELS:
                    row[f"rejected_{model}_mcq"] = REJECTED_MCQ.format(wrong)
                    row[f"rejected_{model}_open_ended"] = REJECTED_OPEN_ENDED.format(ANSWERS[topic]["western"])
                splits[split].append(row)
    return splits


# ------------------------------------------------------------------------------------------------------
# The hub cache layout (huggingface_hub.file_download): blobs named by etag, snapshots/<commit>/ symlinks, refs/main.

_LFS_SUFFIXES = (".safetensors", ".npz", ".parquet", ".bin", ".model")


def _etag(path: Path) -> str:
    """The hub's etag: sha256 of the content for LFS files, the git blob sha1 for the rest."""
    data = path.read_bytes()
    if path.suffix in _LFS_SUFFIXES or len(data) > 10 * 2**20:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_repo(hub: Path, repo_type: str, repo_id: str, staged: Path) -> dict:
    """Move every file under `staged` into `hub` as the cached snapshot of `repo_id` at a commit derived from the
    files; returns the commit and each file's size."""
    from huggingface_hub.file_download import repo_folder_name

    files = sorted(p for p in staged.rglob("*") if p.is_file())
    etags = {p.relative_to(staged).as_posix(): _etag(p) for p in files}
    commit = hashlib.sha1(json.dumps(etags, sort_keys=True).encode()).hexdigest()  # 40 hex, like a git commit
    folder = hub / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    sizes = {}
    for path in files:
        rel = path.relative_to(staged).as_posix()
        blob = folder / "blobs" / etags[rel]
        blob.parent.mkdir(parents=True, exist_ok=True)
        sizes[rel] = path.stat().st_size
        shutil.move(path, blob)
        link = folder / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))  # relative, as huggingface_hub makes them
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)  # no newline: the hub writes the bare hash
    shutil.rmtree(staged)
    return {"repo_id": repo_id, "commit": commit, "snapshot": str(folder / "snapshots" / commit), "files": sizes}


# ------------------------------------------------------------------------------------------------------
# Tokenizer and models


def _training_texts() -> list[str]:
    rows = [row for split in paper_rows().values() for row in split]
    texts = [row[column] for row in rows for column in row if column not in ("country", "localization_status")]
    return texts + ["The quick brown fox jumps over the lazy dog.", "Answer with the number of the correct option."]


def build_tokenizer(vocab_size: int = 1024) -> object:
    """A Gemma-style tokenizer (byte-fallback BPE over '▁'-joined words, Gemma's special ids) trained on the
    fixture's own text, so every id the data produces exists in the tiny checkpoints' embeddings."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]  # byte fallback needs all 256 in the vocabulary
    trainer_tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tokenizer.normalizer = normalizers.Replace(" ", "▁")
    trainer_tokenizer.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")  # merges stay in words
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + len(byte_tokens), show_progress=False,
                                  special_tokens=SPECIAL_TOKENS + byte_tokens)
    trainer_tokenizer.train_from_iterator(_training_texts(), trainer)
    model = json.loads(trainer_tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return GemmaTokenizer(vocab=model["vocab"], merges=merges, extra_special_tokens=["<start_of_turn>", "<end_of_turn>"],
                          add_bos_token=True, add_eos_token=False)


def _save_model(model: torch.nn.Module, tokenizer: object, chat_template: str, target: Path) -> None:
    tokenizer.chat_template = chat_template
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _token_ids(tokenizer: object) -> dict[str, object]:
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
           (("pad", "<pad>"), ("eos", "<eos>"), ("bos", "<bos>"), ("end_of_turn", "<end_of_turn>"))}
    return {"pad_token_id": ids["pad"], "eos_token_id": ids["eos"], "bos_token_id": ids["bos"],
            "chat_eos": [ids["eos"], ids["end_of_turn"]]}  # -it generation configs stop on either


# gemma-2-2b-it's own shapes (its config.json), for timing the paper's model where its weights cannot be had
GEMMA2_2B_SHAPES = {"vocab_size": 256000, "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8,
                    "num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096}


def gemma2_model(tokenizer: object, hidden_size: int, full_size: bool = False) -> torch.nn.Module:
    """Gemma-2's architecture at toy depth/width except d_model, which Gemma Scope's loader fixes at 2304; with
    `full_size`, at gemma-2-2b's real shapes (random bf16 weights, built on the GPU where there is one)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    ids = _token_ids(tokenizer)
    chat_eos = ids.pop("chat_eos")
    torch.manual_seed(SEED)
    shapes = {"vocab_size": len(tokenizer), "intermediate_size": 64, "num_hidden_layers": 16, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 32}
    config = Gemma2Config(
        hidden_size=hidden_size, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        **(GEMMA2_2B_SHAPES if full_size else shapes), **ids,
    )
    if full_size:  # 2.6B parameters: initialised where it is fast, kept in the dtype the GPU runs
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = Gemma2ForCausalLM(config).to(torch.bfloat16).eval()
    else:
        model = Gemma2ForCausalLM(config).eval()
    model.generation_config.eos_token_id = chat_eos
    return model


def gemma3_model(tokenizer: object) -> torch.nn.Module:
    """Gemma-3-270M's text architecture (gemma3_text, 18 layers, 5 sliding : 1 global) at toy width."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    ids = _token_ids(tokenizer)
    chat_eos = ids.pop("chat_eos")
    torch.manual_seed(SEED)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=18,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
        max_position_embeddings=32768, sliding_window=32, rms_norm_eps=1e-6,
        tie_word_embeddings=True, **ids,
    )
    model = Gemma3ForCausalLM(config).eval()
    model.generation_config.eos_token_id = chat_eos
    return model


# ------------------------------------------------------------------------------------------------------
# SAEs in Gemma Scope's own file formats


def _registry_entry(release: str, sae_id: str) -> tuple[str, str, str]:
    """(repo_id, path in the repo, conversion func) from the registry sae-lens ships."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    entry = get_pretrained_saes_directory()[release]
    return entry.repo_id, entry.saes_map[sae_id], entry.conversion_func


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """What np.savez_compressed writes (a zip of .npy members), at deflate level 1: the big arrays are mostly
    zeros and level 1 compresses them in a fraction of the default's time; np.load reads any level."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def gemma_scope_params(d_in: int, d_sae: int) -> tuple[dict[str, np.ndarray], list[int]]:
    """A JumpReLU SAE in Gemma Scope's params.npz layout (W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc,
    b_dec, threshold; float32) with LIVE_LATENTS live latents; the others can never fire (zero encoder column,
    threshold 1) and decode along a unit axis, so every decoder row keeps norm 1 like a trained SAE's."""
    rng = np.random.default_rng(SEED)
    live = np.sort(rng.choice(d_sae, LIVE_LATENTS, replace=False))
    w_enc = np.zeros((d_in, d_sae), dtype=np.float32)
    w_enc[:, live] = rng.standard_normal((d_in, LIVE_LATENTS), dtype=np.float32) / np.sqrt(d_in)
    w_dec = np.zeros((d_sae, d_in), dtype=np.float32)
    w_dec[np.arange(d_sae), np.arange(d_sae) % d_in] = 1.0
    w_dec[live] = (w_enc[:, live] / np.linalg.norm(w_enc[:, live], axis=0)).T
    threshold = np.ones(d_sae, dtype=np.float32)
    threshold[live] = 0.05
    arrays = {"W_enc": w_enc, "W_dec": w_dec, "b_enc": np.zeros(d_sae, dtype=np.float32),
              "b_dec": np.zeros(d_in, dtype=np.float32), "threshold": threshold}
    return arrays, [int(i) for i in live]


def gemma_scope_2_params(d_in: int, d_sae: int) -> dict[str, torch.Tensor]:
    """A JumpReLU SAE in Gemma Scope 2's params.safetensors layout (lower-case w_enc [d_in, d_sae], w_dec,
    b_enc, b_dec, threshold; float32), every latent live."""
    generator = torch.Generator().manual_seed(SEED)
    w_enc = torch.randn(d_in, d_sae, generator=generator) / d_in**0.5
    return {"w_enc": w_enc, "w_dec": (w_enc / w_enc.norm(dim=0)).T.contiguous(), "b_enc": torch.zeros(d_sae),
            "b_dec": torch.zeros(d_in), "threshold": torch.rand(d_sae, generator=generator) * 0.1}


_WIDTHS = {"16k": 16384, "65k": 65536, "262k": 262144, "1m": 1048576}


def _width(folder: str) -> int:
    match = re.search(r"width_(\d+[km])", folder)
    if match is None or match.group(1) not in _WIDTHS:
        raise ValueError(f"SAE path {folder!r} names no known width ({', '.join(_WIDTHS)})")
    return _WIDTHS[match.group(1)]


# ------------------------------------------------------------------------------------------------------
# Dataset: the hub repo plus the Arrow cache datasets prepares from it


def _dataset_card(features: object, counts: dict[str, int], nbytes: dict[str, int], sizes: dict[str, int]) -> str:
    """The README `push_to_hub` writes: a YAML header with dataset_info and the default config's data files."""
    import yaml
    from datasets import DatasetInfo

    info = DatasetInfo(features=features)._to_yaml_dict()
    info["splits"] = [{"name": name, "num_bytes": nbytes[name], "num_examples": counts[name]} for name in counts]
    info["download_size"] = sum(sizes.values())
    info["dataset_size"] = sum(nbytes.values())
    header = {
        "dataset_info": info,
        "configs": [{"config_name": "default",
                     "data_files": [{"split": name, "path": f"data/{name}-*"} for name in counts]}],
        "license": "cc-by-4.0",
        "language": ["en", "ar", "es", "pt", "hi"],
    }
    return ("---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n"
            "# Deep-Culture-Lense (rehearsal stand-in)\n\nTiny stand-in in the column layout of the YaPO paper's "
            "dataset, written by yapo-bench's tests/hub_rehearsal.py. Not the real data.\n")


def write_dataset(hub: Path, datasets_cache: Path, staging: Path) -> dict:
    import datasets
    from datasets.load import LocalDatasetModuleFactory, get_dataset_builder_class
    from datasets.naming import camelcase_to_snakecase

    rows = paper_rows()
    staged = staging / "dataset"
    (staged / "data").mkdir(parents=True)
    sizes, counts, nbytes, features = {}, {}, {}, None
    for split, split_rows in rows.items():
        table = datasets.Dataset.from_list(split_rows)  # to_parquet embeds the datasets features, as push_to_hub
        features = table.features
        path = staged / "data" / f"{split}-00000-of-00001.parquet"
        table.to_parquet(str(path))
        sizes[split], counts[split], nbytes[split] = path.stat().st_size, len(split_rows), table.data.nbytes
    (staged / "README.md").write_text(_dataset_card(features, counts, nbytes, sizes), encoding="utf-8")
    repo = write_repo(hub, "dataset", DATASET_ID, staged)

    # A first online load_dataset(DATASET_ID) resolves the card's configs and prepares Arrow files with the parquet
    # builder under <namespace>___<snake name>/default/0.0.0/<commit>. Its hf:// data files cannot be resolved
    # offline (HfFileSystem asks the API for the revision), so run the same card parsing and builder on the snapshot
    # as a local directory, with the hub's dataset name and commit as hash, then put the result where the hub load
    # would have: only the namespace prefix of the directory differs.
    module = LocalDatasetModuleFactory(repo["snapshot"]).get_module()
    kwargs = dict(module.builder_kwargs)
    config_name = kwargs.pop("config_name", module.builder_configs_parameters.default_config_name)
    kwargs.pop("dataset_name")
    dataset_name = camelcase_to_snakecase(DATASET_ID.split("/")[1])
    builder = get_dataset_builder_class(module, dataset_name=dataset_name)(
        cache_dir=str(staging / "prepare"), dataset_name=dataset_name, config_name=config_name, hash=repo["commit"],
        **kwargs,
    )
    builder.download_and_prepare()
    prepared = datasets_cache / f"{DATASET_ID.split('/')[0]}___{dataset_name}" / Path(builder.cache_dir).relative_to(
        staging / "prepare" / dataset_name)
    prepared.parent.mkdir(parents=True)
    shutil.move(builder.cache_dir, prepared)
    repo.update(prepared=str(prepared), splits=counts, countries=list(ROW_COUNTRIES))
    return repo


# ------------------------------------------------------------------------------------------------------


def offline_env(hf_home: Path) -> dict[str, str]:
    """The variables under which the real loaders must resolve everything from `hf_home` and nothing else."""
    return {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1"}


def build_hub_cache(hf_home: Path, full_size: bool = False) -> dict:
    """Fill `hf_home` (the future HF_HOME) with the stand-ins; returns what was written where. `full_size` builds
    gemma-2-2b-it at its real shapes (for `make gpu-check` on a machine that cannot receive the presets)."""
    from sae_lens.loading.pretrained_sae_loaders import get_gemma_2_config_from_hf

    hf_home = Path(hf_home)
    hub, staging = hf_home / "hub", hf_home / "staging"
    if hub.exists():
        raise FileExistsError(f"{hub} exists: build_hub_cache writes a fresh cache only")
    staging.mkdir(parents=True)
    tokenizer = build_tokenizer()
    written: dict = {"hf_home": str(hf_home), "env": offline_env(hf_home), "models": {}, "saes": {}}

    # Gemma Scope: ask sae-lens' own converter which shapes it will build, then size the model and file to them.
    repo_id, folder, conversion = _registry_entry(*GEMMA_SCOPE)
    expected = get_gemma_2_config_from_hf(repo_id, folder, device="cpu")
    d_in, d_sae = expected["d_in"], expected["d_sae"]

    _save_model(gemma2_model(tokenizer, d_in, full_size), tokenizer, GEMMA2_CHAT_TEMPLATE, staging / "gemma2")
    written["models"][GEMMA2_ID] = write_repo(hub, "model", GEMMA2_ID, staging / "gemma2")
    gemma3 = gemma3_model(tokenizer)
    _save_model(gemma3, tokenizer, GEMMA3_CHAT_TEMPLATE, staging / "gemma3")
    written["models"][GEMMA3_ID] = write_repo(hub, "model", GEMMA3_ID, staging / "gemma3")

    arrays, live = gemma_scope_params(d_in, d_sae)
    (staging / "scope" / folder).mkdir(parents=True)
    _write_npz(staging / "scope" / folder / "params.npz", arrays)
    del arrays
    spec = "/".join(GEMMA_SCOPE)
    written["saes"][spec] = {**write_repo(hub, "model", repo_id, staging / "scope"), "path": folder,
                             "conversion_func": conversion, "d_in": d_in, "d_sae": d_sae, "live_latents": live}

    written["saes"]["/".join(GEMMA_SCOPE_2)] = write_gemma_scope_2(hub, staging, GEMMA_SCOPE_2,
                                                                  gemma3.config.hidden_size, GEMMA3_ID)
    written["dataset"] = write_dataset(hub, hf_home / "datasets", staging)
    shutil.rmtree(staging)
    return written


def write_gemma_scope_2(hub: Path, staging: Path, spec: tuple[str, str], d_in: int, model_name: str,
                        d_sae: int | None = None) -> dict:
    """A Gemma Scope 2 SAE (params.safetensors + config.json) under its registry repo and path."""
    from safetensors.torch import save_file

    repo_id, folder, conversion = _registry_entry(*spec)
    d_sae = d_sae or _width(folder)
    layer = int(re.search(r"layer_(\d+)", folder).group(1))
    root = staging / f"scope2-{spec[0]}"
    target = root / folder
    target.mkdir(parents=True)
    save_file(gemma_scope_2_params(d_in, d_sae), target / "params.safetensors")
    config = {  # the keys Gemma Scope 2's per-SAE config.json carries
        "width": d_sae, "model_name": model_name, "architecture": "jump_relu", "l0": 60, "affine_connection": False,
        "hf_hook_point_in": f"model.layers.{layer}.output", "hf_hook_point_out": f"model.layers.{layer}.output",
        "type": "sae",
    }
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return {**write_repo(hub, "model", repo_id, root), "path": folder, "conversion_func": conversion,
            "d_in": d_in, "d_sae": d_sae}


def build_preset_sae_cache(hf_home: Path, spec: tuple[str, str], d_in: int, model_name: str) -> dict:
    """An HF_HOME holding one Gemma Scope 2 stand-in at a preset model's real width (`d_in`), 1,024 latents: what a
    user who once loaded the gemma3-270m preset's registry SAE has in their cache."""
    hub, staging = Path(hf_home) / "hub", Path(hf_home) / "staging"
    staging.mkdir(parents=True)
    written = write_gemma_scope_2(hub, staging, spec, d_in, model_name, d_sae=1024)
    shutil.rmtree(staging)
    return written


def main(argv: list[str]) -> int:
    full_size = "--full-size" in argv
    argv = [arg for arg in argv if arg != "--full-size"]
    if len(argv) != 1:
        print("usage: python tests/hub_rehearsal.py HF_HOME [--full-size]", file=sys.stderr)
        return 2
    written = build_hub_cache(Path(argv[0]), full_size)
    print(json.dumps({k: v for k, v in written.items()}, indent=1, default=str))
    env = " ".join(f"{k}={v}" for k, v in written["env"].items())
    print(f"\n# use it with:\nexport {env}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
