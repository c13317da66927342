"""Export a :class:`GPT` as a Hugging Face ``transformers`` GPT-2 checkpoint directory.

Writes ``config.json`` and ``model.safetensors`` directly (``transformers`` is not needed to
export, only to load). ``GPT2LMHeadModel.from_pretrained(out_dir)`` then computes the same
logits as our model. GPT-2 stores its linear layers as ``Conv1D`` with weights shaped
(in, out), so every linear weight is transposed.

μP models export exactly too: GPT-2 always scales attention by ``1/sqrt(d_head)``, so the
extra factor of μP's ``1/d_head`` scaling is folded into the query weights and bias; and the
output multiplier is folded into an untied ``lm_head`` (``tie_word_embeddings: false``).

Given the study's tokenizer, the export carries it too: ``tokenizer.json`` (the ``tokenizers``
BPE as trained), ``tokenizer_config.json`` and ``special_tokens_map.json``, so that
``AutoTokenizer.from_pretrained(out_dir)`` encodes text to the same ids as proxyscale. The
end-of-text token is BOS, EOS and padding (GPT-2's convention, and the document separator the
model was trained with), and ``split_special_tokens`` makes a literal ``<|endoftext|>`` in text
plain bytes, as proxyscale's tokenizer encodes it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from ..errors import ConfigError
from ..store import save_weights, write_json
from ..store.output import Inputs, output_dir
from .gpt import GPT

if TYPE_CHECKING:
    from ..data.tokenizer import Tokenizer


def hf_config(model: GPT) -> dict:
    """The ``config.json`` contents of the GPT-2 equivalent of ``model``."""
    cfg = model.cfg
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": 4 * cfg.d_model,
        "activation_function": "gelu",  # exact (erf) GELU, as F.gelu in our MLP
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": cfg.init_std,
        "scale_attn_weights": True,
        "tie_word_embeddings": not cfg.mup,
        "bos_token_id": None,
        "eos_token_id": None,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights renamed (and transposed) to GPT-2's ``GPT2LMHeadModel`` names."""
    cfg = model.cfg
    d = cfg.d_model
    # Ratio of our score scale to GPT-2's fixed 1/sqrt(d_head); exactly 1 without μP.
    q_fold = cfg.attn_scale * math.sqrt(cfg.head_dim)
    sd = {"transformer.wte.weight": model.wte.weight, "transformer.wpe.weight": model.wpe.weight,
          "transformer.ln_f.weight": model.ln_f.weight, "transformer.ln_f.bias": model.ln_f.bias}
    for i, b in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        qkv_w = b.qkv.weight.detach().clone()  # (3d, d)
        qkv_b = b.qkv.bias.detach().clone()  # (3d,)
        qkv_w[:d] *= q_fold
        qkv_b[:d] *= q_fold
        sd.update({
            p + "ln_1.weight": b.ln_1.weight, p + "ln_1.bias": b.ln_1.bias,
            p + "attn.c_attn.weight": qkv_w.t(), p + "attn.c_attn.bias": qkv_b,
            p + "attn.c_proj.weight": b.attn_out.weight.t(), p + "attn.c_proj.bias": b.attn_out.bias,
            p + "ln_2.weight": b.ln_2.weight, p + "ln_2.bias": b.ln_2.bias,
            p + "mlp.c_fc.weight": b.fc.weight.t(), p + "mlp.c_fc.bias": b.fc.bias,
            p + "mlp.c_proj.weight": b.proj.weight.t(), p + "mlp.c_proj.bias": b.proj.bias,
        })
    if cfg.mup:
        sd["lm_head.weight"] = model.wte.weight.detach() * cfg.output_mult
    return {k: v.detach().float() for k, v in sd.items()}


def tokenizer_files(tokenizer: "Tokenizer", context: int) -> dict[str, dict | str]:
    """The tokenizer files of an export: ``tokenizer.json`` (text) and the two JSON configs."""
    from ..data.tokenizer import EOS_TOKEN

    special = {"bos_token": EOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **special, "model_max_length": context,
              "add_prefix_space": False, "split_special_tokens": True, "clean_up_tokenization_spaces": False}
    return {"tokenizer.json": tokenizer.to_json(), "tokenizer_config.json": config, "special_tokens_map.json": special}


def export_hf(model: GPT, out_dir: str | Path, *, tokenizer: Optional["Tokenizer"] = None,
              overwrite: bool = False, flag: str = "out_dir", inputs: Inputs = ()) -> Path:
    """Write ``config.json`` + ``model.safetensors`` loadable by ``GPT2LMHeadModel`` (and, given
    ``tokenizer``, the tokenizer files ``AutoTokenizer`` loads); returns ``out_dir``.

    ``out_dir`` follows the output policy (:mod:`proxyscale.store.output`): staged beside it and
    renamed into place; a new or empty directory, or (``overwrite``) an earlier export. It may not
    be, lie in or contain one of ``inputs`` (``(flag, path)`` pairs, e.g. the run store)."""
    from ..store import write_text

    state = hf_state_dict(model)
    need = sum(t.numel() * t.element_size() for t in state.values())
    config = hf_config(model)
    if tokenizer is not None:
        if tokenizer.vocab_size > model.cfg.vocab_size:
            raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                              f"{model.cfg.vocab_size}; export the model with the tokenizer it was trained with")
        config.update(bos_token_id=tokenizer.eos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.eos_id)
    with output_dir(out_dir, inputs=inputs, overwrite=overwrite, flag=flag, need_bytes=need) as stage:
        save_weights(stage / "model.safetensors", state, metadata={"format": "pt"})
        write_json(stage / "config.json", config)
        if tokenizer is not None:
            for name, content in tokenizer_files(tokenizer, model.cfg.context).items():
                if isinstance(content, str):
                    write_text(stage / name, content)
                else:
                    write_json(stage / name, content)
    return Path(out_dir)
