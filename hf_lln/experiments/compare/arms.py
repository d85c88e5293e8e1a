"""The arms of a comparison: an attention with the ``lln_*`` settings swept for it, and how each reaches a run
(a config folder for ``run_mlm``, flags for ``hf-lln convert``)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hf_lln.models.configuration_lln import lln_config_from
from hf_lln.recipes.mlm import preset_config
from hf_lln.variants import VARIANTS, is_softmax

SETTING_LABELS = {"lln_stats": "stats", "lln_mix_mode": "mix", "lln_block_size": "block"}
CONVERT_FLAGS = {"lln_stats": "--stats", "lln_mix_mode": "--mix_mode", "lln_block_size": "--block_size"}


@dataclass(frozen=True)
class Arm:
    """One attention with the ``lln_*`` settings swept for it (none: the config defaults)."""

    attention: str
    settings: tuple[tuple[str, str | int], ...] = ()

    @property
    def name(self) -> str:
        """Folder-safe and unique: ``lln_diag-stats_global-block_32`` (attention names hold no ``-``)."""
        return "-".join([self.attention, *(f"{SETTING_LABELS[key]}_{value}" for key, value in self.settings)])

    @property
    def is_softmax(self) -> bool:
        return is_softmax(self.attention)

    @property
    def convert_flags(self) -> list[str]:
        """The settings as ``hf-lln convert`` flags."""
        return [flag for key, value in self.settings for flag in (CONVERT_FLAGS[key], str(value))]


def make_arms(attentions: Sequence[str], sweep: Mapping[str, Sequence[str | int] | None]) -> list[Arm]:
    """One arm per attention and combination of the swept settings that attention reads (``hf_lln.variants``)."""
    arms = []
    for attention in attentions:
        read = VARIANTS[attention].settings if attention in VARIANTS else ()
        keys = [key for key in read if sweep.get(key)]
        for values in itertools.product(*(sweep[key] for key in keys)):
            arms.append(Arm(attention, tuple(zip(keys, values, strict=True))))
    return arms


def arm_config(comparison_dir: Path, config_name: str, arm: Arm) -> str:
    """``run_mlm --config_name`` of a scratch arm: the preset, or a config folder with the arm's settings
    (``run_mlm`` has no flag per setting)."""
    if not arm.settings or arm.is_softmax:
        return config_name
    folder = comparison_dir / "configs" / arm.name
    config = lln_config_from(preset_config(config_name), lln_variant=arm.attention, **dict(arm.settings))
    config.save_pretrained(folder)
    return str(folder)
