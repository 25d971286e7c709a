"""The one error type of checkpoint reading, in its own module so every reading module can raise it."""
from __future__ import annotations

OFFICIAL_SOURCE_HINT = ("the official instancediffusion_sd15.pth (Hugging Face xudongw/InstanceDiffusion) or "
                        "logtd's fusers.ckpt + position_net.ckpt + scaleu.ckpt")


class CheckpointError(ValueError):
    """A weights file cannot be used; the message says what was found, what was expected and what to do."""
