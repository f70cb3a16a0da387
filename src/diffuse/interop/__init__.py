"""Bridges to other libraries' formats: diffusers' ``UNet2DModel`` and schedulers.

``export_diffusers(CKPT, OUT)`` writes a checkpoint as a diffusers pipeline folder;
``convert_diffusers_folder(IN, OUT)`` reads one back as a checkpoint. The translation of
the settings (:mod:`~diffuse.interop.unet2d`, :mod:`~diffuse.interop.scheduler`) is plain
data and needs no diffusers; writing and reading the folders do (an optional extra,
``pip install 'diffuse[diffusers]'``), and diffusers is imported only when they run.
"""

from diffuse.interop.diffusers_folder import (
    convert_diffusers_folder,
    export_diffusers,
    require_diffusers,
)

__all__ = ["convert_diffusers_folder", "export_diffusers", "require_diffusers"]
