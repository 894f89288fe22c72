"""HF checkpoint I/O: ``config.json`` + safetensors in, the same out.

Loading reads one tensor at a time (safetensors are memory-mapped) and, given a mesh, builds each
parameter directly on its shards with ``jax.make_array_from_callback``: every device receives only its
slice, and the whole model never sits in host memory twice. Pickle checkpoints (``*.bin``, ``*.pt``)
are refused: safetensors only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from jaxdistill.distributed import is_main_process, to_host
from jaxdistill.models.config import LoraConfig, QwenConfig, as_dtype
from jaxdistill.models.lora import Linear
from jaxdistill.models.qwen import Qwen
from jaxdistill.sharding import variable_sharding

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja")


def hf_parameter_map(config: QwenConfig) -> dict[str, tuple[tuple, bool]]:
    """HF tensor name -> (path in the NNX state, transpose?). torch Linear weights are [out, in]."""
    names: dict[str, tuple[tuple, bool]] = {"model.embed_tokens.weight": (("embed_tokens",), False),
                                             "model.norm.weight": (("norm", "weight"), False)}
    if not config.tie_word_embeddings:
        names["lm_head.weight"] = (("lm_head",), False)
    for i in range(config.num_hidden_layers):
        pre = f"model.layers.{i}."
        layer = ("layers", i)
        names[pre + "input_layernorm.weight"] = (layer + ("input_layernorm", "weight"), False)
        names[pre + "post_attention_layernorm.weight"] = (layer + ("post_attention_layernorm", "weight"), False)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            names[pre + f"self_attn.{proj}.weight"] = (layer + ("self_attn", proj, "kernel"), True)
        if config.qkv_bias:
            for proj in ("q_proj", "k_proj", "v_proj"):
                names[pre + f"self_attn.{proj}.bias"] = (layer + ("self_attn", proj, "bias"), False)
        if config.o_bias:
            names[pre + "self_attn.o_proj.bias"] = (layer + ("self_attn", "o_proj", "bias"), False)
        if config.qk_norm:
            names[pre + "self_attn.q_norm.weight"] = (layer + ("self_attn", "q_norm", "weight"), False)
            names[pre + "self_attn.k_norm.weight"] = (layer + ("self_attn", "k_norm", "weight"), False)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            names[pre + f"mlp.{proj}.weight"] = (layer + ("mlp", proj, "kernel"), True)
    return names


def _checkpoint_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({folder / f for f in weight_map.values()})
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise FileNotFoundError(f"{index} names shard file(s) that do not exist: {missing}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(
            f"{folder} holds only pickle checkpoint(s) {pickles}; jaxdistill loads safetensors only "
            "(pickle can run arbitrary code). Convert once with transformers: "
            "AutoModelForCausalLM.from_pretrained(path).save_pretrained(path, safe_serialization=True)"
        )
    raise FileNotFoundError(f"{folder} has no *.safetensors weights (and no model.safetensors.index.json)")


class _SafetensorsFile:
    """``safe_open`` whose read errors (a truncated or corrupt file) name the file and the tensor."""

    def __init__(self, file: Path):
        self.file = file
        try:
            self.handle = safe_open(str(file), framework="numpy")
        except SafetensorError as err:
            raise ValueError(f"{file}: not a readable safetensors file ({err}); is it truncated? "
                             "Re-export or re-download it") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle = None

    def keys(self):
        return self.handle.keys()

    def get_tensor(self, name: str) -> np.ndarray:
        try:
            return self.handle.get_tensor(name)
        except SafetensorError as err:
            raise ValueError(f"{self.file}: cannot read tensor {name!r} ({err}); is the file truncated? "
                             "Re-export or re-download it") from None


def read_config(path: str | Path) -> tuple[Path, dict]:
    """The checkpoint folder and its parsed ``config.json`` (with clear errors)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        hint = ""
        if len(folder.parts) == 2 and not str(path).startswith((".", "/", "~")):  # looks like a hub repo id
            hint = (f"; to use the hub model {path}, download it first: "
                    f"huggingface-cli download {path} --local-dir {path}")
        raise FileNotFoundError(f"model folder {folder} does not exist{hint}")
    cfg_file = folder / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{folder} has no config.json; point to an HF model folder "
                                "(config.json + *.safetensors)")
    try:
        return folder, json.loads(cfg_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_file} is not valid JSON: {err}") from err


def load_model(path: str | Path, dtype: str = "float32", mesh: Mesh | None = None, *,
               compute_dtype: str | None = None, lora: LoraConfig | None = None,
               seed: int = 0) -> tuple[Qwen, QwenConfig]:
    """Load an HF Qwen2/Qwen2.5/Qwen3 folder into a Flax NNX model.

    Args:
      path: folder with config.json and model.safetensors (or sharded, with an index).
      dtype: parameter dtype ("float32" | "bfloat16" | "float16").
      mesh: if given, each parameter is created directly on its shards.
      compute_dtype: activation dtype (default: ``dtype``).
      lora: attach fresh adapters (B = 0) after loading.
      seed: RNG seed for the adapter initialisation.
    Returns:
      (model, config).
    """
    folder, hf = read_config(path)
    config = QwenConfig.from_hf(hf, param_dtype=dtype, compute_dtype=compute_dtype or dtype)
    target_dtype = as_dtype(dtype)
    abstract = nnx.eval_shape(lambda: Qwen(config, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    variables = dict(nnx.to_flat_state(abstract_state))
    expected = hf_parameter_map(config)
    loaded: dict[tuple, jax.Array] = {}
    tied_head = None
    embed_source = None
    for file in _checkpoint_files(folder):
        with _SafetensorsFile(file) as f:
            for name in f.keys():
                if name == "lm_head.weight" and config.tie_word_embeddings:
                    tied_head = (file, name)  # checked against the embedding below
                    continue
                if name not in expected:
                    raise ValueError(f"{file.name}: unexpected tensor {name!r} for a {config.model_type} model "
                                     f"with this config.json (extra or misnamed weight)")
                state_path, transpose = expected[name]
                if name == "model.embed_tokens.weight":
                    embed_source = (file, name)
                var = variables[state_path]
                want = tuple(var.get_value().shape)
                array = f.get_tensor(name)
                shape = array.shape[::-1] if transpose else array.shape
                if tuple(shape) != want:
                    raise ValueError(f"{file.name}: tensor {name!r} has shape {tuple(array.shape)}, expected "
                                     f"{want[::-1] if transpose else want} from config.json")
                loaded[state_path] = _to_device(array, transpose, target_dtype, var, mesh)
    missing = sorted(set(n for n, (p, _) in expected.items() if p not in loaded))
    if missing:
        raise ValueError(f"{folder}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                         f"({len(missing)} in all) for this config.json")
    if tied_head is not None:
        # Compared on the host copies from the files: the loaded embedding may be spread over processes.
        with _SafetensorsFile(tied_head[0]) as f:
            head = f.get_tensor(tied_head[1])
        with _SafetensorsFile(embed_source[0]) as f:
            embed = f.get_tensor(embed_source[1])
        if not np.allclose(head.astype(np.float32), embed.astype(np.float32)):
            raise ValueError("config.json sets tie_word_embeddings=true but lm_head.weight differs from "
                             "model.embed_tokens.weight; set tie_word_embeddings=false")
    state = nnx.from_flat_state([(p, v.replace(loaded[p])) for p, v in variables.items()])
    model = nnx.merge(graphdef, state)
    if lora is not None:
        model.add_lora(lora, nnx.Rngs(seed))
        if mesh is not None:
            from jaxdistill.sharding import shard_model
            shard_model(model, mesh)
    return model, config


def _to_device(array: np.ndarray, transpose: bool, dtype, var: nnx.Variable, mesh: Mesh | None) -> jax.Array:
    if transpose:
        array = array.T
    if mesh is None:
        return jnp.asarray(array, dtype=dtype)
    sharding = variable_sharding(var, mesh)
    return jax.make_array_from_callback(array.shape, sharding,
                                        lambda index: np.asarray(array[index]).astype(dtype))


def save_model(model: Qwen, path: str | Path, *, tokenizer_dir: str | Path | None = None,
               max_shard_size: str | int = "5GB") -> Path:
    """Write an HF folder (config.json, safetensors, generation_config.json) with LoRA merged.

    ``tokenizer_dir``: copy its tokenizer files alongside, so the folder is self-contained.
    Sharded arrays are gathered to the host one tensor at a time. In a multi-process run every
    process must call this (the gathers are collectives) and process 0 alone writes the folder.
    """
    from huggingface_hub import split_state_dict_into_shards_factory

    config: QwenConfig = model.config
    out = Path(path).expanduser()
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for name, (state_path, transpose) in hf_parameter_map(config).items():
        owner = model
        for key in state_path[:-1]:
            owner = owner[key] if isinstance(key, int) else getattr(owner, key)
        leaf = state_path[-1]
        if isinstance(owner, Linear) and leaf == "kernel":
            value = owner.merged_kernel()
        else:
            value = getattr(owner, leaf)[...]
        array = to_host(value)
        if is_main_process():
            tensors[name] = np.ascontiguousarray(array.T if transpose else array)
    if not is_main_process():
        return out
    split = split_state_dict_into_shards_factory(
        tensors, get_storage_size=lambda a: a.nbytes, max_shard_size=max_shard_size,
        filename_pattern="model{suffix}.safetensors")
    for old in out.glob("*.safetensors"):
        old.unlink()
    for filename, names in split.filename_to_tensors.items():
        save_file({n: tensors[n] for n in names}, str(out / filename), metadata={"format": "pt"})
    index = out / "model.safetensors.index.json"
    if split.is_sharded:
        index.write_text(json.dumps({"metadata": {}, "weight_map": split.tensor_to_filename}, indent=2))
    elif index.exists():
        index.unlink()
    (out / "config.json").write_text(json.dumps(config.to_hf(), indent=2))
    gen = {k: v for k, v in (("bos_token_id", config.bos_token_id), ("eos_token_id", config.eos_token_id),
                             ("pad_token_id", config.pad_token_id)) if v is not None}
    if gen:
        (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_dir) / name
            if src.exists():
                shutil.copy2(src, out / name)
    return out


def save_lora(model: Qwen, path: str | Path) -> Path:
    """Write only the adapter weights (safetensors, keyed like the HF tensors) and their config.

    Multi-process: every process calls this (gathers are collectives); process 0 writes."""
    from jaxdistill.models.lora import LoraParam

    if model.lora_config is None:
        raise ValueError("model has no LoRA adapters to save")
    out = Path(path).expanduser()
    tensors = {}
    for p, var in nnx.to_flat_state(nnx.state(model, LoraParam)):
        tensors[".".join(map(str, p))] = to_host(var.get_value())
    if not is_main_process():
        return out
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter.safetensors"), metadata={"format": "jaxdistill-lora"})
    cfg = model.lora_config
    (out / "adapter_config.json").write_text(json.dumps(
        {"rank": cfg.rank, "alpha": cfg.alpha, "dropout": cfg.dropout, "targets": list(cfg.targets)}, indent=2))
    return out
