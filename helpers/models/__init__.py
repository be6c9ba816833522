"""Pool entries to modules: h = f_v(x) and the linear head W of Section 2.

- :mod:`.catalogue`  families, errors, the open_clip / torchvision names, each entry's eval
  preprocessing and the checks run before anything is built (QuickGELU, tags, finetuned lineage)
- :mod:`.weights`    checkpoints read with ``weights_only=True``, hub weights, file digests,
  atomic classifier checkpoints
- :mod:`.heads`      the zero-shot head (Section 2), its templates and its cache
- :mod:`.precision`  the one mixed-precision rule (autocast on CUDA only)
- :mod:`.loading`    building architectures and :func:`load` -> :class:`LoadedModel`

``from helpers.models import load, zero_shot_head, ...`` gives the public API below.
"""
from helpers.models.catalogue import (CLASSIFIER_FORMAT, FINETUNED_FAMILIES, SUPERVISED_FAMILIES, ZERO_SHOT_FAMILIES,
                                      MissingWeightsError, ModelError, Preprocessing, UnsafeCheckpointError,
                                      check_entry, preprocessing, quick_gelu_required)
from helpers.models.heads import HEAD_PROMPTS_PER_BATCH, head_without_model, reduced_zero_shot_head, zero_shot_head
from helpers.models.loading import LoadedModel, build_architecture, load, load_from_profile, profile_load_options
from helpers.models.precision import autocast
from helpers.models.weights import file_sha256, save_classifier

__all__ = [
    "CLASSIFIER_FORMAT", "FINETUNED_FAMILIES", "SUPERVISED_FAMILIES", "ZERO_SHOT_FAMILIES",
    "MissingWeightsError", "ModelError", "Preprocessing", "UnsafeCheckpointError",
    "check_entry", "preprocessing", "quick_gelu_required",
    "HEAD_PROMPTS_PER_BATCH", "head_without_model", "reduced_zero_shot_head", "zero_shot_head",
    "LoadedModel", "build_architecture", "load", "load_from_profile", "profile_load_options",
    "autocast", "file_sha256", "save_classifier",
]
