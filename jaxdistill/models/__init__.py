"""Qwen2 / Qwen2.5 / Qwen3 decoders in Flax NNX, LoRA, and HF safetensors I/O."""

from jaxdistill.models.config import LoraConfig, QwenConfig
from jaxdistill.models.hf_io import load_model, save_lora, save_model
from jaxdistill.models.lora import LoraParam
from jaxdistill.models.qwen import KVCache, Qwen

__all__ = ["KVCache", "LoraConfig", "LoraParam", "Qwen", "QwenConfig", "load_model", "save_lora", "save_model"]
