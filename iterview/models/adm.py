"""ADM U-Net on RGBD, state-dict compatible with the official ivid AdmUnet2d.

Module names and order follow the official code exactly, so the released `imagenet128_uncond.pt` /
`imagenet128_cond.pt` state dicts load with `load_state_dict(strict=True)` and no key remapping.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from iterview.diffusion.schedule import DiffusionSchedule

PREDICTIONS = ("epsilon", "v")  # what the network's last layer outputs; forward() always returns ε


@functools.cache
def _alpha_sigma() -> torch.Tensor:
    """(2, 1000) float32: α_t = √ᾱ_t and σ_t = √(1 − ᾱ_t) of the official linear schedule (v-prediction)."""
    with torch.device("cpu"):  # not the meta device of a model being built for loading
        schedule = DiffusionSchedule.linear(1000)
    return torch.stack([schedule.sqrt_alphas_cumprod, schedule.sqrt_one_minus_alphas_cumprod]).float()


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back, so fp16 blocks normalise without overflow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class TimestepEmbedding(nn.Module):
    """Sinusoidal features [cos(t·f), sin(t·f)] of raw (unscaled) timesteps; t: (B,) → (B, dim) float32."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        # A persistent buffer: the official checkpoints carry it as `time_embed.0.freqs`.
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.float()[:, None] * self.freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepBlock(nn.Module):
    """Marks a block whose forward(x, emb) also takes the (B, E) timestep/class embedding."""


class TimestepSequential(nn.Sequential):
    """Sequential that hands the embedding to the blocks that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest ×2, then an optional 3×3 conv (only used with resblock_updown=False)."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Strided 3×3 conv or 2×2 average pool (only used with resblock_updown=False)."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(TimestepBlock):
    """Residual block with embedding-conditioned (scale, shift) norm and optional ×2 up/down resampling."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        num_groups: int = 32,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(num_groups, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(num_groups, out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            # Official order: norm + SiLU at the input size, resample h and x alike, then convolve.
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention with the legacy ADM qkv layout: channels split per head, then [q, k, v]."""

    def __init__(self, channels: int, num_heads: int, num_groups: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.token_major = False  # set by `prepare_for_inference`
        self.norm = GroupNorm32(num_groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_major:
            return self._forward_token_major(x)
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        # (B, heads·3·ch, T) → three (B, heads, T, ch); the official scale ch^-¼ on q and k is SDPA's 1/√ch.
        q, k, v = qkv.reshape(b, self.num_heads, 3, c // self.num_heads, -1).transpose(-1, -2).unbind(2)
        h = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, -1)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)

    def _forward_token_major(self, x: torch.Tensor) -> torch.Tensor:
        """The same attention with tokens as rows, (B, T, C): the 1×1 convolutions become matrix products and
        q, k, v come out with contiguous channels, which CPU SDPA needs for its fused kernel. With a channels_last
        x (B, C, H, W), the token view is the memory layout itself, so no transpose is copied."""
        height, width = x.shape[-2:]
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        qkv = F.linear(tokens, self.qkv.weight.squeeze(-1), self.qkv.bias)
        # Legacy layout: the 3C outputs are (heads, [q, k, v], ch); each of q, k, v becomes (B, heads, T, ch).
        q, k, v = qkv.unflatten(-1, (self.num_heads, 3, -1)).permute(3, 0, 2, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        out = F.linear(h, self.proj_out.weight.squeeze(-1), self.proj_out.bias)
        return x + out.transpose(1, 2).unflatten(-1, (height, width))


class ADMUNet(nn.Module):
    """Official AdmUnet2d, same constructor arguments and state-dict keys.

    attention_resolutions are spatial sizes (e.g. [32, 16, 8] at 128 px), not downsampling factors.
    num_head_channels != -1 overrides num_heads (heads = channels / num_head_channels). With use_fp16 the
    convolutions of the input/middle/output blocks are float16, everything else float32 (official layout).
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        num_classes: int | None = None,
        has_null_class: bool = False,
        use_fp16: bool = False,
        num_groups: int = 32,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
        conv_resample: bool = True,
        prediction: str = "epsilon",
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, found {prediction!r}")
        self.prediction = prediction
        self.image_size = image_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.has_null_class = has_null_class
        emb_dim = 4 * model_channels

        def heads(ch: int) -> int:
            return ch // num_head_channels if num_head_channels != -1 else num_heads

        def res(ch: int, out: int | None = None, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(ch, emb_dim, dropout, out, num_groups, use_scale_shift_norm, up, down)

        self.time_embed = nn.Sequential(
            TimestepEmbedding(model_channels),
            nn.Linear(model_channels, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        ch = model_channels * channel_mult[0]
        size = image_size
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, model_channels * mult)]
                ch = model_channels * mult
                if size in attention_resolutions:
                    layers.append(AttentionBlock(ch, heads(ch), num_groups))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(TimestepSequential(down))
                skip_chans.append(ch)
                size //= 2

        self.middle_block = TimestepSequential(res(ch), AttentionBlock(ch, heads(ch), num_groups), res(ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), model_channels * mult)]
                ch = model_channels * mult
                if size in attention_resolutions:
                    layers.append(AttentionBlock(ch, heads(ch), num_groups))
                if level and i == num_res_blocks:
                    layers.append(res(ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    size *= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(num_groups, ch), nn.SiLU(), _zero(nn.Conv2d(ch, out_channels, 3, padding=1))
        )
        if use_fp16:
            self.convert_to_fp16()

    def _block_convs(self) -> list[nn.Module]:
        blocks = [*self.input_blocks, self.middle_block, *self.output_blocks]
        return [m for block in blocks for m in block.modules() if isinstance(m, nn.Conv1d | nn.Conv2d)]

    def convert_to_fp16(self) -> None:
        """Official fp16 layout: block convolutions in float16; norms, linears, embeddings and `out` float32."""
        for conv in self._block_convs():
            conv.half()

    def convert_to_fp32(self) -> None:
        """Undo convert_to_fp16 (e.g. for fp32 training or CPU inference of an fp16 config)."""
        for conv in self._block_convs():
            conv.float()

    @property
    def block_dtype(self) -> torch.dtype:
        """The dtype the input/middle/output blocks compute in."""
        return self.input_blocks[0][0].weight.dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, in, H, W); timesteps: (B,) network timesteps 0..999 (float allowed); classes: (B,) long,
        -1 = null, or None (all null). Returns ε: (B, out, H, W), float32 (the `out` head's dtype).

        A v-prediction network (prediction="v") outputs v = α·ε − σ·x_0, returned as ε = σ·x_t + α·v, so that
        samplers, guidance and the (Min-SNR-weighted) ε loss work unchanged."""
        emb = self.time_embed(timesteps)
        if classes is not None:
            if self.num_classes is None:
                raise ValueError("classes were given to an unconditional ADMUNet (num_classes is None)")
            # The null class is a zero vector, not a learned row: look up row 0 and multiply by 0.
            keep = classes >= 0
            emb = emb + self.label_emb(classes.clamp(min=0)) * keep[:, None].to(emb.dtype)
        h = x.to(self.block_dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        out = self.out(h.to(self.out[-1].weight.dtype))
        if self.prediction == "v":
            t = timesteps.round().long() if timesteps.is_floating_point() else timesteps
            alpha, sigma = _alpha_sigma().to(out.device)[:, t].view(2, -1, 1, 1, 1)
            out = sigma * x[:, : self.out_channels].to(out.dtype) + alpha * out
        return out


def prepare_for_inference(model: ADMUNet, channels_last: bool = True) -> ADMUNet:
    """Switch `model` (in place, eval mode) to its fast inference path, same weights and state dict: attention
    on token-major tensors (fused CPU SDPA), SiLU in place after each GroupNorm, and optionally channels_last
    memory (pass inputs as they come; the first convolution adopts the layout). fp32 outputs stay within 1e-4
    of the official formulation (tests/test_adm.py); bf16 is an opt-in for the caller (`torch.autocast`)."""
    model.eval()
    for module in model.modules():
        if isinstance(module, AttentionBlock):
            module.token_major = True
        elif isinstance(module, nn.Sequential):
            # Only a SiLU right after a GroupNorm acts on a fresh tensor; the one on the shared embedding must not.
            for norm, activation in pairwise(module):
                if isinstance(norm, nn.GroupNorm) and isinstance(activation, nn.SiLU):
                    activation.inplace = True
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def compile_for_inference(model: ADMUNet) -> nn.Module:
    """`prepare_for_inference(model)` compiled with torch.compile, its weights frozen into the graph as constants
    and a C++ wrapper around the kernels (inductor's `freezing` and `cpp_wrapper`): on 2-core CPUs the synth
    U-Net ran 1.49-1.79x the official module at batch 1 and 1.7-2.0x at batch 16 (`benchmarks/bench_unet.py
    --compile`), fp32 within 1e-4. Call it under `torch.no_grad()` (freezing applies to inference only). The
    first call of each input shape compiles, for minutes on a small CPU: worth it for long runs only. The weights
    must not change afterwards."""
    return torch.compile(prepare_for_inference(model), options={"freezing": True, "cpp_wrapper": True})
