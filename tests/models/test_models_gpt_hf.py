"""Export to Hugging Face GPT-2: same logits as ours (transformers as an oracle, test-only)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from oracles import oracle
from proxyscale.models.gpt import GPT, GPTConfig
from proxyscale.models.hf_export import export_hf

torch.set_num_threads(1)


def _perturbed(cfg: GPTConfig, seed: int) -> GPT:
    """A model with non-trivial biases and LayerNorms (the init leaves them at 0/1)."""
    model = GPT(cfg, torch.Generator().manual_seed(seed)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("mup", [False, True])
def test_gpt2_logits_equal_ours(tmp_path, mup):
    transformers = oracle("transformers")
    cfg = GPTConfig(97, 24, 96 if mup else 64, 2, 4, mup=mup, mup_base_width=32)
    model = _perturbed(cfg, 0)
    export_hf(model, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 97, (3, 24), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours, theirs = model(idx), hf(idx).logits
    assert ours.abs().max() > 0.1  # not a degenerate comparison
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["tie_word_embeddings"] is (not mup)
    assert sum(p.numel() for p in hf.parameters()) >= sum(p.numel() for p in model.parameters())


def test_export_does_not_need_transformers(tmp_path):
    code = ("import sys, torch; sys.modules['transformers'] = None\n"
            "from proxyscale.models import GPT, GPTConfig, export_hf\n"
            f"export_hf(GPT(GPTConfig(11, 4, 8, 1, 2)), {str(tmp_path)!r})\n"
            "assert sys.modules['transformers'] is None")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
