"""ScaleU (spec 1.7): learned per-channel scale of the decoder backbone and low-frequency scale of the skip.

Applied to output block k before backbone ``h`` and skip ``hs`` are concatenated. Always computed in float32:
the official code only upcasts for non-power-of-two grids, and an fp16 FFT loses precision for no gain (cuFFT's
half precision also only takes power-of-two sizes). ``fft_device`` lets a host run the skip filter elsewhere
(e.g. on the CPU for a backend without FFT kernels), the way ComfyUI's FreeU falls back.
"""
from __future__ import annotations

import torch


def skip_frequency_mask(height: int, width: int, scale: torch.Tensor) -> torch.Tensor:
    """``[H, W]`` ones with the centred 2x2 window (after ``fftshift``) set to ``scale``.

    The window is ``[H//2-1 : H//2+1, W//2-1 : W//2+1]`` with Python slice semantics, as in the official
    ``Fourier_filter(threshold=1)``: frequency bins {0, -1} on each axis (not conjugate-symmetric; the real part
    of the inverse FFT is kept).
    """
    mask = torch.ones(height, width, dtype=torch.float32, device=scale.device)
    r, c = height // 2, width // 2
    mask[r - 1:r + 1, c - 1:c + 1] = scale.to(torch.float32).reshape(())
    return mask


def skip_filter(hs: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``real(ifft2(ifftshift(fftshift(fft2(hs)) * M)))`` in float32 on ``hs``'s device, M from
    ``skip_frequency_mask(H, W, 1 + tanh(s))``."""
    height, width = hs.shape[-2:]
    sf = torch.tanh(s.to(device=hs.device, dtype=torch.float32)) + 1
    x = torch.fft.fftshift(torch.fft.fftn(hs.to(torch.float32), dim=(-2, -1)), dim=(-2, -1))
    x = x * skip_frequency_mask(height, width, sf)
    return torch.fft.ifftn(torch.fft.ifftshift(x, dim=(-2, -1)), dim=(-2, -1)).real


def scaleu(h: torch.Tensor, hs: torch.Tensor, b: torch.Tensor, s: torch.Tensor,
           fft_device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``h [B,C_h,H,W]``, ``hs [B,C_s,H,W]``, raw parameters ``b = scaleu_b_k [C_h]``, ``s = scaleu_s_k [1]``.

    Returns ``(h * (1 + tanh(b)), real(ifft2(ifftshift(fftshift(fft2(hs)) * M))))`` with M from
    ``skip_frequency_mask(H, W, 1 + tanh(s))``, each in its input's dtype and on its input's device. The skip filter
    runs on ``fft_device`` when given (its result is moved back), else on ``hs``'s device.
    """
    if h.ndim != 4 or hs.ndim != 4:
        raise ValueError(f"scaleu: h and hs must be [B, C, H, W], got {list(h.shape)} and {list(hs.shape)}")
    if b.numel() != h.shape[1]:
        raise ValueError(f"scaleu: scaleu_b has {b.numel()} values but h has {h.shape[1]} channels; the weights "
                         f"belong to a block of a different width")
    if s.numel() != 1:
        raise ValueError(f"scaleu: scaleu_s must hold one value, got shape {list(s.shape)}")
    bf = (torch.tanh(b.to(device=h.device, dtype=torch.float32)) + 1).view(1, -1, 1, 1)
    h_out = (h.to(torch.float32) * bf).to(h.dtype)

    if fft_device is not None and torch.device(fft_device) != hs.device:
        hs_out = skip_filter(hs.to(device=fft_device, dtype=torch.float32), s).to(hs.device)
    else:
        hs_out = skip_filter(hs, s)
    return h_out, hs_out.to(hs.dtype)
