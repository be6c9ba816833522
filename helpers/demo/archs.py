"""Tiny stand-ins for the paper's backbones, used by the demo profile (``configs/demo.yml``).

They keep the real code paths and the real input geometry (224 px) and shrink only the widths
and depths, so that every stage of the study runs on a laptop CPU in seconds:

- ``demo-RN50``: open_clip's CLIP modified ResNet (stem, four bottleneck stages, attention
  pooling), one block per stage, width 16, d_H = 64.
- ``demo-ViT-B-32``: open_clip's CLIP ViT, patch 32, width 64, 2 blocks of 2 heads, d_H = 64.
- ``demo-coca_ViT-B-32``: open_clip's CoCa (ViT with attentional pooling, text encoder and
  multimodal text decoder), same vision widths, d_H = 64.
- ``demo_vit_b_32``: torchvision's ``VisionTransformer`` (the class behind ``vit_b_32``), patch
  32, width 64, 2 blocks of 2 heads, 1,000 classes: the supervised-ViT code path.

The open_clip ones are JSON configs in ``helpers/reference/model_configs/`` registered with
``open_clip.add_model_config``. Their text towers are one block of width 32 (MLP ratio 2) with a
context of 24 tokens (the longest of the 80,000 ImageNet prompts is 22 tokens with its start and
end tokens; longer prompts are truncated as open_clip does), so that the zero-shot head over
1,000 classes x 80 templates takes seconds on a CPU. As for the paper's RN50 (text width
512, d_H = 1,024) the text width is below d_H, so rank(W) <= 32. ``demo-RN50`` and
``demo-ViT-B-32`` use QuickGELU like the OpenAI weights they stand in for; ``demo-coca_ViT-B-32``
uses plain GELU like the LAION-2B CoCa weights.
"""
from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "reference" / "model_configs"

#: open_clip model names defined by the JSON files of :data:`CONFIG_DIR`.
OPEN_CLIP_DEMO_MODELS = tuple(sorted(p.stem for p in CONFIG_DIR.glob("demo-*.json")))


def register_demo_models() -> None:
    """Make the ``demo-*`` configs known to open_clip (``create_model``, ``get_tokenizer``).

    Idempotent: open_clip appends every registered path to its search list, so register once.
    """
    import open_clip

    if not set(OPEN_CLIP_DEMO_MODELS) <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


def demo_vit_b_32(weights=None):
    """torchvision ``VisionTransformer`` shrunk like the open_clip demos (no weights exist)."""
    if weights is not None:
        raise ValueError("demo_vit_b_32 has no pretrained weights; it is randomly initialised")
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=224, patch_size=32, num_layers=2, num_heads=2, hidden_dim=64,
                             mlp_dim=256, num_classes=1000)


#: torchvision-style builders (``builder(weights=None)``) for demo models.
TORCHVISION_DEMO_BUILDERS = {"demo_vit_b_32": demo_vit_b_32}
