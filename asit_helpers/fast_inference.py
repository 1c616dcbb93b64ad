"""The CPU fast inference copy: the same network, rearranged so a CPU with native bf16 runs it near its FLOP rate.

:func:`asit_helpers.inference.bf16_copy` builds (and caches) this copy of a model; ``predict`` runs it under
``torch.autocast("cpu", torch.bfloat16)``. Nothing here changes what the model computes, only how:

* **The convolutional front end as matrix products, channels last.** wav2vec2's seven strided convolutions
  (``kernel k``, ``stride s``) are ``(frames, k·C_in) @ (k·C_in, C_out)`` products on a time-major copy of the
  activations; oneDNN's direct bf16 convolutions are several times slower here, the first one (a single input
  channel) most of all. The first layer (10 taps of one channel: few FLOPs, all precision) and the norms run in
  float32; the wide layers multiply in bf16, as autocast would.
* **The positional convolution's weight norm folded** into one plain bf16 weight (it is recomputed from ``g`` and
  ``v`` on every call otherwise).
* **bf16 weights for every linear layer**, cast once (autocast would re-cast them on every call), and the
  transformer layers' weights also packed once into oneDNN's own layout (it is reordered on every call otherwise).

The pooling, the head and the softmax stay in the caller's float32 model. Frame counts and masks are the
backbone's own arithmetic (the copy keeps its config), so a Prediction's frame grid does not change.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

#: the widest conv window (k·C_in) whose group norm is folded into per-clip weights (wav2vec2's first layer: 10)
FOLD_MAX_WINDOW = 64


class MatmulConvLayer(nn.Module):
    """One wav2vec2 conv layer (conv → optional group/layer norm → activation) on time-major activations.

    Input `(B, T_in, C_in)`, output `(B, T_out, C_out)`, ``T_out = (T_in - k) // s + 1`` (no padding, as in the
    feature encoder). Multiplies in ``dtype`` (the first layer, one input channel and 10 taps, in float32).
    """

    def __init__(self, layer: nn.Module, dtype: torch.dtype):
        super().__init__()
        conv: nn.Conv1d = layer.conv
        if conv.groups != 1 or conv.padding not in ((0,), 0) or conv.dilation not in ((1,), 1):
            raise ValueError("only ungrouped, unpadded, undilated convolutions are rearranged")
        self.kernel, self.stride = int(conv.kernel_size[0]), int(conv.stride[0])
        # (C_out, C_in, k) -> (k·C_in, C_out), rows in the order of a window of k time-major frames
        weight = conv.weight.detach().permute(2, 1, 0).reshape(-1, conv.out_channels)
        self.register_buffer("weight", weight.to(dtype).contiguous())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().to(dtype).clone())
        norm = getattr(layer, "layer_norm", None)
        self.norm_kind = None if norm is None else ("group" if isinstance(norm, nn.GroupNorm) else "layer")
        if self.norm_kind == "group" and norm.num_groups != norm.num_channels:
            raise ValueError("only per-channel group norm (wav2vec2's) is rearranged")
        self.norm = copy.deepcopy(norm).float() if norm is not None else None
        self.activation = layer.activation
        # bf16 layers without a norm (wav2vec2-base's layers 1-6): product and GELU as one oneDNN call
        self.fused = self.norm_kind is None and dtype == torch.bfloat16 and _is_exact_gelu(self.activation)
        if self.fused:
            self.register_buffer("weight_nk", self.weight.t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, channels = x.shape
        t_out = (frames - self.kernel) // self.stride + 1
        # each output frame reads k consecutive time-major frames: one contiguous run of k·C values
        windows = x.as_strided((batch, t_out, self.kernel * channels),
                               (x.stride(0), self.stride * channels, 1))
        if self.norm_kind == "group" and windows.shape[-1] <= FOLD_MAX_WINDOW:
            out = self._conv_group_norm_folded(windows)
            # GELU in place: a 5 s clip's first-layer output is 33 MB of float32, and allocating a second one (fresh
            # pages from the OS at that size) cost more than the GELU itself (measured: 23 ms -> 9 ms, same values)
            return torch.ops.aten.gelu_(out) if _is_exact_gelu(self.activation) else self.activation(out)
        if self.fused:
            return _linear(windows, self.weight_nk, self.bias, gelu=True)
        out = torch.matmul(windows.to(self.weight.dtype), self.weight)
        if self.bias is not None:
            out = out + self.bias
        if self.norm_kind == "group":  # per channel over time; float32 statistics
            out = out.float()
            mean = out.mean(dim=1, keepdim=True)
            var = out.var(dim=1, unbiased=False, keepdim=True)
            out = (out - mean) * torch.rsqrt(var + self.norm.eps) * self.norm.weight + self.norm.bias
        elif self.norm_kind == "layer":
            out = nn.functional.layer_norm(out.float(), self.norm.normalized_shape, self.norm.weight,
                                           self.norm.bias, self.norm.eps)
        return self.activation(out)

    def _conv_group_norm_folded(self, windows: torch.Tensor) -> torch.Tensor:
        """Convolution + per-channel group norm as ONE product with per-clip weights. The conv is linear in its
        windows, so each channel's mean and variance over time follow from the windows' mean ``m`` and covariance
        ``S`` (k·C_in x k·C_in: 10 x 10 for wav2vec2's first layer): ``mean = m·w + b``, ``var = wᵀ S w``; the
        normalised output is ``windows @ (w·scale) + (β - m·w·scale)`` with ``scale = γ / sqrt(var + eps)``
        (the conv bias cancels). Statistics in float64; it saves the three passes over the wide (T, C_out)
        output that computing them there costs (measured: the largest single item of the front end)."""
        windows = windows.to(self.weight.dtype)
        w64 = windows.double()
        mean_in = w64.mean(dim=1)  # (B, K)
        cov = w64.transpose(1, 2) @ w64 / w64.shape[1] - mean_in[:, :, None] * mean_in[:, None, :]  # (B, K, K)
        weight = self.weight.double()  # (K, C)
        var = ((cov @ weight) * weight).sum(dim=1)  # (B, C)
        scale = torch.rsqrt(var + self.norm.eps)
        if self.norm.weight is not None:
            scale = scale * self.norm.weight.double()
        shift = -(mean_in @ weight) * scale
        if self.norm.bias is not None:
            shift = shift + self.norm.bias.double()
        folded = (weight[None] * scale[:, None, :]).to(windows.dtype)  # (B, K, C)
        shift = shift.to(windows.dtype)  # (B, C)
        return torch.baddbmm(shift[:, None, :], windows, folded)


class MatmulFeatureEncoder(nn.Module):
    """wav2vec2's feature encoder as :class:`MatmulConvLayer` s. `(B, S)` → `(B, C, T)`, like the original (a
    transposed view of a time-major tensor, which the backbone transposes straight back)."""

    def __init__(self, encoder: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.conv_layers = nn.ModuleList(
            MatmulConvLayer(layer, torch.float32 if i == 0 else dtype) for i, layer in enumerate(encoder.conv_layers)
        )

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        hidden = input_values.float()[:, :, None].contiguous()  # (B, S, 1): time-major, one channel
        with torch.autocast(hidden.device.type, enabled=False):  # each layer picks its own precision
            for layer in self.conv_layers:
                hidden = layer(hidden).contiguous()
        return hidden.transpose(1, 2)


class FoldedPositionalConv(nn.Module):
    """wav2vec2's positional convolution (grouped, ``same`` padding, weight norm) with the weight norm folded into
    one plain ``dtype`` weight, computed once instead of from ``g`` and ``v`` on every call. `(B, T, D)` → `(B, T, D)`.

    It stays a grouped convolution: as one batched matrix product over the groups it measured slower (the window
    copy is 128 frames deep), most of all at batch 8."""

    def __init__(self, pos_conv: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        conv = pos_conv.conv
        if hasattr(conv, "weight_g"):  # the old-style torch.nn.utils.weight_norm hook
            folded = torch._weight_norm(conv.weight_v, conv.weight_g, 2)
        else:  # a parametrization computes the weight from g and v on access: read it once
            folded = conv.weight
        self.groups, self.padding = int(conv.groups), int(conv.padding[0])
        self.remove = int(getattr(pos_conv.padding, "num_pad_remove", 0))
        self.register_buffer("weight", folded.detach().to(dtype).contiguous())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().to(dtype).clone())
        self.activation = pos_conv.activation

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            x = hidden.to(self.weight.dtype).transpose(1, 2)
            out = nn.functional.conv1d(x, self.weight, self.bias, padding=self.padding, groups=self.groups)
            if self.remove:
                out = out[:, :, : -self.remove]
            return self.activation(out).transpose(1, 2)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False,
            packed: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` (then exact GELU), in ``weight``'s dtype. bf16 goes to oneDNN's inner product with
    the bias and the GELU fused (one pass over the output instead of three; the GELU is applied to the float32
    accumulator, so there is one bf16 rounding instead of two), reading ``packed`` (``weight`` in oneDNN's own
    layout, see :func:`_pack`) when given; other dtypes to ``F.linear``."""
    x = x.to(weight.dtype)
    if weight.dtype == torch.bfloat16 and _ONEDNN_LINEAR and not _compiling():
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, weight if packed is None else packed, bias,
                                                 "gelu" if gelu else "none", [], "none" if gelu else "")
        return out.view(*x.shape[:-1], weight.shape[0])
    out = nn.functional.linear(x, weight, bias)
    return nn.functional.gelu(out) if gelu else out


_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_ONEDNN_PACK = _ONEDNN_LINEAR and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
#: the row count oneDNN lays a packed weight out for: a 5 s clip's 249 frames, the shape predict meets most (the
#: packed layout measured as fast or faster than the plain one from 49 to 1,992 rows, identical results)
PACK_ROWS = 249


def _pack(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` reordered once into oneDNN's blocked layout (an opaque tensor only ``_linear_pointwise`` reads),
    or None where that is not available. The plain weight is otherwise reordered again on every call: measured on
    a transformer layer's four products at 249 rows, packed weights are 3-20 % faster."""
    if not (_ONEDNN_PACK and weight.dtype == torch.bfloat16 and weight.device.type == "cpu"):
        return None
    return torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS)


def _compiling() -> bool:
    """Under ``torch.compile`` the plain ``F.linear`` + GELU is traced instead: inductor cannot lower the oneDNN
    op (``LoweringException`` on ``mkldnn._linear_pointwise``, torch 2.13) and fuses bias and GELU itself."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling and is_compiling())


def _is_exact_gelu(act) -> bool:
    """``nn.GELU()`` or transformers' ``GELUActivation`` on ``F.gelu`` (not the tanh/quick/python variants)."""
    if isinstance(act, nn.GELU):
        return act.approximate == "none"
    return type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is nn.functional.gelu


class FusedEncoderLayer(nn.Module):
    """One wav2vec2 transformer layer (post-norm, or pre-norm for "stable layer norm" encoders) for inference:
    the query, key and value projections as ONE product, bias and GELU fused into the products, the residual
    stream and the layer norms in float32, attention through SDPA on ``dtype`` activations. Same inputs and
    output as the original layer (hidden states `(B, T, D)`, the encoder's attention mask)."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype, pre_norm: bool):
        super().__init__()
        attn, ff = layer.attention, layer.feed_forward
        if getattr(layer, "adapter_layer", None) is not None or getattr(ff, "intermediate_act_fn", None) is None:
            raise ValueError("only plain wav2vec2 layers are fused")
        if not _is_exact_gelu(ff.intermediate_act_fn):
            raise ValueError("only exact-GELU feed-forward layers are fused")
        self.pre_norm, self.heads, self.scaling = pre_norm, int(attn.num_heads), float(attn.scaling)
        cast = lambda t: t.detach().to(dtype).contiguous()  # noqa: E731
        self.register_buffer("w_qkv", cast(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])))
        self.register_buffer("b_qkv", cast(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])))
        self.register_buffer("w_out", cast(attn.out_proj.weight))
        self.register_buffer("b_out", cast(attn.out_proj.bias))
        self.register_buffer("w_up", cast(ff.intermediate_dense.weight))
        self.register_buffer("b_up", cast(ff.intermediate_dense.bias))
        self.register_buffer("w_down", cast(ff.output_dense.weight))
        self.register_buffer("b_down", cast(ff.output_dense.bias))
        self.layer_norm = copy.deepcopy(layer.layer_norm).float()
        self.final_layer_norm = copy.deepcopy(layer.final_layer_norm).float()
        self.returns_tuple = _returns_tuple(layer)
        # oneDNN-packed copies of the four weights, made on first use; not buffers: an opaque tensor can be neither
        # saved nor deep-copied (a copy of this layer packs its own again)
        self._packed: dict[str, torch.Tensor | None] = {}

    def __getstate__(self):
        return {**super().__getstate__(), "_packed": {}}

    def _product(self, x: torch.Tensor, name: str, gelu: bool = False) -> torch.Tensor:
        """The layer's product ``name`` (``qkv``, ``out``, ``up``, ``down``) on ``x``, through its packed weight."""
        weight = getattr(self, f"w_{name}")
        if _compiling():  # the traced path multiplies the plain weight (see _linear)
            return _linear(x, weight, getattr(self, f"b_{name}"), gelu)
        if name not in self._packed:
            self._packed[name] = _pack(weight)
        return _linear(x, weight, getattr(self, f"b_{name}"), gelu, self._packed[name])

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **_):
        hidden = self._layer(hidden_states, attention_mask)
        return (hidden,) if self.returns_tuple else hidden

    def _attention(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, frames, width = hidden.shape
        qkv = self._product(hidden, "qkv").view(batch, frames, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, head_dim)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        return self._product(out.transpose(1, 2).reshape(batch, frames, width), "out")

    def _layer(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast(hidden_states.device.type, enabled=False):
            hidden = hidden_states.float()
            if self.pre_norm:
                hidden = hidden + self._attention(self.layer_norm(hidden), attention_mask).float()
                ff_in = self.final_layer_norm(hidden)
                return hidden + self._product(self._product(ff_in, "up", gelu=True), "down").float()
            hidden = self.layer_norm(hidden + self._attention(hidden, attention_mask).float())
            ff = self._product(self._product(hidden, "up", gelu=True), "down").float()
            return self.final_layer_norm(hidden + ff)


def _returns_tuple(layer: nn.Module) -> bool:
    """Whether the encoder expects a tuple from its layers: transformers 5.15 and older return ``(hidden, ...)``
    and take ``layer(...)[0]`` (a bare tensor there would lose its batch axis), newer ones return the tensor.
    Asked of the original layer itself, on two frames of zeros."""
    width = layer.layer_norm.normalized_shape[0]
    param = next(layer.parameters())
    with torch.no_grad():
        out = layer(torch.zeros(1, 2, width, dtype=param.dtype, device=param.device))
    return isinstance(out, tuple)


def _rearrange(backbone: nn.Module, dtype: torch.dtype, fuse_layers: bool = True) -> None:
    """Swap the front end and the positional conv of a wav2vec2-family backbone for the fast versions, in place;
    a part that does not have the expected shape is left as it is."""
    front = getattr(backbone, "feature_extractor", None)
    if front is not None and hasattr(front, "conv_layers"):
        try:
            backbone.feature_extractor = MatmulFeatureEncoder(front, dtype)
        except (ValueError, AttributeError):
            pass
    encoder = getattr(backbone, "encoder", None)
    layers = getattr(encoder, "layers", None)
    if fuse_layers and isinstance(layers, nn.ModuleList) and getattr(backbone.config, "model_type", "") in ("wav2vec2", "hubert"):
        try:
            pre_norm = bool(backbone.config.do_stable_layer_norm)
            encoder.layers = nn.ModuleList(FusedEncoderLayer(layer, dtype, pre_norm) for layer in layers)
        except (ValueError, AttributeError):
            pass
    pos = getattr(encoder, "pos_conv_embed", None)
    if pos is not None and hasattr(pos, "conv") and isinstance(pos.conv, nn.Conv1d):
        try:
            encoder.pos_conv_embed = FoldedPositionalConv(pos, dtype)
        except (ValueError, AttributeError):
            pass


def build_fast_copy(model: nn.Module, rearrange: bool = True, dtype: torch.dtype = torch.bfloat16,
                    fuse_layers: bool = True) -> nn.Module:
    """A copy of ``model`` in eval mode, frozen, with ``dtype`` linear weights and (``rearrange``) the conv front
    end and positional conv as matrix products. Run its ``encode`` under ``torch.autocast("cpu", dtype)``.

    ``rearrange=False`` is the previous fast path (bf16 weights only; the weight-normed positional conv keeps its
    float32 parameters), kept for ``bench/latency.py``; ``dtype=torch.float32`` checks the rearrangement alone;
    ``fuse_layers=False`` keeps the original transformer layers (run under autocast), also for the benchmark.
    """
    with torch.inference_mode(False), torch.no_grad():
        fast = copy.deepcopy(model).eval().requires_grad_(False)
        if rearrange:
            _rearrange(fast.backbone, dtype, fuse_layers)
        for module in fast.backbone.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d)) and not parametrize.is_parametrized(module):
                module.to(dtype)
    return fast
