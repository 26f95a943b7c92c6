"""A frozen copy of a classifier that gives the same logits and is faster to attack.

:func:`attack_model` folds eval-mode batch norms into the preceding convolutions (through ``torch.fx``),
stores 4-D weights channels-last, and on CPU gives 2-D convolutions of one-channel input a cheaper
input gradient (one matrix product and a col2im). Measured in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F

_FOLD_MAX_INPUTS = 1  # on CPU the fold backward beat oneDNN for 1 input channel (2.7x), not for 3 or 4


class _FoldBackwardConv2d(torch.autograd.Function):
    """``conv2d`` whose input gradient is one matrix product and a col2im (``F.fold``).

    oneDNN's backward-data kernel is slow for convolutions with one input channel (a ResNet stem on
    MRI: about 3-5x slower than this on CPU); the weight and bias get no gradient.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):  # type: ignore[override]
        ctx.save_for_backward(weight)
        ctx.geometry = (tuple(x.shape[-2:]), x.dtype, stride, padding, dilation)
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        size, dtype, stride, padding, dilation = ctx.geometry
        n, c_out = grad.shape[:2]
        grad = grad.to(weight.dtype)
        if grad.is_contiguous():
            columns = grad.view(n, c_out, -1)
        else:  # channels-last: a strided (N, C_out, L) view, no copy
            columns = grad.permute(0, 2, 3, 1).reshape(n, -1, c_out).transpose(1, 2)
        cols = torch.matmul(weight.reshape(c_out, -1).t(), columns)  # (N, C_in * kh * kw, L)
        grad_x = F.fold(cols, size, weight.shape[2:], dilation=dilation, padding=padding, stride=stride)
        return grad_x.to(dtype), None, None, None, None, None


class _FoldConv2d(nn.Module):
    """A frozen ``nn.Conv2d`` computing its input gradient with :class:`_FoldBackwardConv2d`."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        return _FoldBackwardConv2d.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


def _fold_candidate(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.groups == 1
        and module.in_channels <= _FOLD_MAX_INPUTS
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def _replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _fold_batchnorm(model: nn.Module) -> nn.Module | None:
    """``model`` (eval mode) traced by ``torch.fx`` with every Conv -> BatchNorm pair folded into the Conv.

    A pair is folded only when the convolution's output feeds the batch norm alone, both modules are
    called once, and the norm uses running statistics. Returns ``None`` where the model cannot be traced.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # dynamic control flow and the like: keep the model as it is
        return None
    modules = dict(traced.named_modules())
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    for node in list(traced.graph.nodes):
        source = node.args[0] if node.op == "call_module" and node.args else None
        if not isinstance(source, torch.fx.Node) or source.op != "call_module":
            continue
        conv, bn = modules.get(source.target), modules.get(node.target)
        if type(conv) not in convs or type(bn) not in norms:
            continue
        if len(source.users) > 1 or calls[source.target] > 1 or calls[node.target] > 1 or not bn.track_running_stats:
            continue
        _replace_module(traced, source.target, fuse_conv_bn_eval(conv, bn))
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced


def attack_model(
    model: nn.Module,
    device: str | torch.device | None = None,
    *,
    fold_batchnorm: bool = True,
    channels_last: bool | None = None,
    fold_backward: bool | None = None,
) -> nn.Module:
    """A frozen copy of ``model`` that gives the same logits (up to rounding) and attacks faster.

    The copy is in eval mode with ``requires_grad`` off, so it only serves inference and input
    gradients; ``model`` itself is untouched. Later changes to ``model``'s weights do not reach it.

    Args:
        model: the classifier.
        device: where the copy lives (default: where ``model``'s first parameter is).
        fold_batchnorm: fold eval-mode batch norms into the preceding convolutions (needs a model
            ``torch.fx`` can trace; otherwise nothing is folded).
        channels_last: store 4-D weights channels-last (``None``: yes; measured faster on CPU and CUDA).
        fold_backward: give 2-D convolutions with one input channel a matrix-product input gradient
            (``None``: on CPU only, where oneDNN's kernel for them is slow).

    Returns:
        The fast copy.
    """
    param = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (param.device if param is not None else None)
    fast = copy.deepcopy(model).eval()
    if device is not None:
        fast = fast.to(device)
    if fold_batchnorm:
        folded = _fold_batchnorm(fast)
        fast = fast if folded is None else folded
    if fold_backward if fold_backward is not None else (device is None or device.type == "cpu"):
        for name, module in list(fast.named_modules()):
            if _fold_candidate(module):
                _replace_module(fast, name, _FoldConv2d(module))
    if channels_last is None or channels_last:
        for p in fast.parameters():  # .to, not .contiguous: it also restrides one-channel weights
            if p.ndim == 4:
                p.data = p.data.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast.eval()
