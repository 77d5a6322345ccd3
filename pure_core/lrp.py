"""LRP input heatmaps through zennit, as the authors' crops are made: EpsilonPlusFlat with a canonizer.

LRP (layer-wise relevance propagation) needs the model in a canonical form: batch norms merged into the
convolution before them, and every residual addition done by a module (zennit's ``Sum``) so that a rule can
split the relevance between the branches instead of copying it to both. Canonizers do this temporarily,
inside a composite's context. Which canonizer fits a model is looked up by the class names of its modules
(`register_canonizer`), never by the model's name; a model with no registered family, or with a module LRP
is not written for here (squeeze-excitation gates), has none, and `canonizer_for` returns None.

Families covered:

- torchvision ResNets: zennit's own ``ResNetCanonizer`` (what the authors use).
- timm ResNets (``BasicBlock``, ``Bottleneck`` without SE): batch norms merged, residual sums as modules.
- timm EfficientNets without SE (EfficientNet-Lite0: ``DepthwiseSeparableConv``, ``InvertedResidual``;
  also ``EdgeResidual``, ``ConvBnAct``): batch norms merged (timm's ``BatchNormAct2d`` holds its activation
  as a child, so zennit's leaf-by-leaf merge would never see it), residual sums as modules.

Modelled on the authors' ``utils/lrp_canonizers.py`` (github.com/maxdreyer/PURE, which states no licence),
written anew: the block forwards follow timm 1.0's, with the addition replaced by ``Sum``. Our batch-norm
merge leaves an exact identity behind (zennit's leaves ``x / sqrt(1 + eps)``, 0.05 % per layer at timm's
TF-style ``eps = 1e-3``), so the canonized model's outputs equal the original's within float rounding.

`lrp_composite(model)` is the authors' composite: EpsilonPlusFlat (flat rule for the first layer, z+ for the
other convolutions, epsilon for linear layers, pass-through for activations and batch norms) with the
model's canonizer; its z+ runs as `pure_core.lrp_rules.LeanZPlus`, the same rule with half the work.
`lrp_heatmaps_for_pairs` starts the relevance at the neuron's activation A_k(h*, w*)
(the same start as the gradient path) and returns the relevance at the input summed over RGB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from zennit.canonizers import AttributeCanonizer, Canonizer, CompositeCanonizer, SequentialMergeBatchNorm
from zennit.composites import EpsilonPlusFlat
from zennit.layer import Sum
from zennit.types import Convolution

from pure_core.attribution import input_attributions_for_pairs
from pure_core.lrp_rules import LeanZPlus

__all__ = [
    "CANONIZERS",
    "CPU_BATCH",
    "UNCANONIZED",
    "ExactMergeBatchNorm",
    "ResidualSumCanonizer",
    "canonizer_for",
    "class_names",
    "lrp_composite",
    "lrp_heatmaps_for_pairs",
    "register_canonizer",
]

# Pairs per forward and backward on a CPU: zennit's rules keep several copies of every activation, and beyond
# a few images they fall out of cache (ResNet-50 at 224 px, 2 cores: 0.46 s per pair in batches of 8, 0.98 s
# in batches of 32).
CPU_BATCH = 8
# family class name ("module.Class" of a model or any of its modules) -> canonizer factory; first match wins
CANONIZERS: dict[str, Callable[[], Canonizer]] = {}
# modules whose LRP treatment is not written here: a model holding one has no canonizer
UNCANONIZED = frozenset({
    "timm.models._efficientnet_blocks.SqueezeExcite",
    "torchvision.ops.misc.SqueezeExcitation",
    "timm.layers.squeeze_excite.SEModule",
})


def class_names(module: nn.Module) -> set[str]:
    """``"module.Class"`` of ``module``'s class and its bases (a subclass matches its family)."""
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(module).__mro__}


def register_canonizer(family: str) -> Callable[[Callable[[], Canonizer]], Callable[[], Canonizer]]:
    """Decorator: the decorated factory makes the canonizer of models holding a module of class ``family``
    (``"module.Class"``)."""
    def decorator(factory: Callable[[], Canonizer]) -> Callable[[], Canonizer]:
        CANONIZERS[family] = factory
        return factory
    return decorator


def canonizer_for(model: nn.Module) -> Canonizer | None:
    """A fresh canonizer for ``model``'s family, or None when no family is registered for its modules or it
    holds a module in `UNCANONIZED`."""
    names = set().union(*(class_names(module) for module in model.modules()))
    if names & UNCANONIZED:
        return None
    family = next((f for f in CANONIZERS if f in names), None)
    return None if family is None else CANONIZERS[family]()


def lrp_composite(model: nn.Module) -> EpsilonPlusFlat:
    """zennit's EpsilonPlusFlat with ``model``'s canonizer, its z+ rule computed by `LeanZPlus` (the same
    relevance, half the convolutions); `ValueError` when the model has no canonizer."""
    canonizer = canonizer_for(model)
    if canonizer is None:
        raise ValueError(f"no LRP canonizer is registered for {type(model).__name__}; use gradient_x_input")
    return EpsilonPlusFlat(canonizers=[canonizer], layer_map=[(Convolution, LeanZPlus())])


def lrp_heatmaps_for_pairs(model: nn.Module, inputs: torch.Tensor, layer: str,
                           neuron_of_input: Sequence[int], positions=None) -> torch.Tensor:
    """LRP input heatmaps ``(B, H, W)``: row b is the relevance of neuron ``neuron_of_input[b]``'s activation
    at ``positions[b]`` (or of its rectified map) on input b, summed over RGB; one forward and one backward
    per `CPU_BATCH` pairs on a CPU, for the whole batch on a GPU
    (`pure_core.attribution.input_attributions_for_pairs` with `lrp_composite`)."""
    composite = lrp_composite(model)
    step = CPU_BATCH if inputs.device.type == "cpu" else max(1, len(inputs))
    parts = (slice(i, i + step) for i in range(0, max(1, len(inputs)), step))  # an empty batch: one call
    return torch.cat([input_attributions_for_pairs(model, inputs[part], layer, neuron_of_input[part],
                                                   None if positions is None else positions[part],
                                                   composite=composite) for part in parts])


# -- canonizers ----------------------------------------------------------------------------------------
def _leaves(module: nn.Module) -> Iterator[nn.Module]:
    """Modules without children in forward order, a batch norm counting as one leaf with its children."""
    children = list(module.children())
    if not children or isinstance(module, nn.modules.batchnorm._BatchNorm):
        yield module
        return
    for child in children:
        yield from _leaves(child)


class ExactMergeBatchNorm(SequentialMergeBatchNorm):
    """Merge every batch norm that directly follows a convolution or linear layer into it (in the order the
    modules are registered), leaving the batch norm an exact identity; timm's ``BatchNormAct2d`` counts as a
    batch norm (its activation stays)."""

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        instances = []
        last = None
        for leaf in _leaves(root_module):
            if isinstance(last, self.linear_type) and isinstance(leaf, self.batch_norm_type):
                instance = self.copy()
                instance.register((last,), leaf)
                instances.append(instance)
            last = leaf
        return instances

    @staticmethod
    def merge_batch_norm(modules, batch_norm) -> None:
        SequentialMergeBatchNorm.merge_batch_norm(modules, batch_norm)
        batch_norm.running_var.data = torch.full_like(batch_norm.running_var.data, 1.0 - batch_norm.eps)


class ResidualSumCanonizer(AttributeCanonizer):
    """Replace the ``forward`` of blocks with a residual addition by one that adds through a ``Sum`` module
    (``canonizer_sum``), so LRP rules see the addition. ``forwards`` maps ``"module.Class"`` -> forward."""

    def __init__(self, forwards: dict[str, Callable[..., torch.Tensor]]):
        self.forwards = forwards
        super().__init__(self._attributes)

    def _attributes(self, _name: str, module: nn.Module) -> dict[str, object] | None:
        forward = next((self.forwards[n] for n in class_names(module) if n in self.forwards), None)
        if forward is None:
            return None
        return {"forward": forward.__get__(module), "canonizer_sum": Sum()}

    def copy(self) -> ResidualSumCanonizer:
        return ResidualSumCanonizer(self.forwards)


def _add(block: nn.Module, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """``x + shortcut`` through the block's ``Sum`` module."""
    return block.canonizer_sum(torch.stack([x, shortcut], dim=-1))


def _efficientnet_skip(block: nn.Module, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    return _add(block, block.drop_path(x), shortcut) if block.has_skip else x


def _space_to_depth(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if getattr(block, "conv_s2d", None) is not None:
        x = block.bn_s2d(block.conv_s2d(x))
    return x


def _timm_inverted_residual(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    shortcut = x
    x = self.bn1(self.conv_pw(_space_to_depth(self, x)))
    x = self.se(self.aa(self.bn2(self.conv_dw(x))))
    return _efficientnet_skip(self, self.bn3(self.conv_pwl(x)), shortcut)


def _timm_depthwise_separable(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    shortcut = x
    x = self.se(self.aa(self.bn1(self.conv_dw(_space_to_depth(self, x)))))
    return _efficientnet_skip(self, self.bn2(self.conv_pw(x)), shortcut)


def _timm_edge_residual(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    shortcut = x
    x = self.se(self.aa(self.bn1(self.conv_exp(x))))
    return _efficientnet_skip(self, self.bn2(self.conv_pwl(x)), shortcut)


def _timm_conv_bn_act(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _efficientnet_skip(self, self.aa(self.bn1(self.conv(x))), x)


def _timm_resnet_shortcut(block: nn.Module, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    if block.se is not None:
        x = block.se(x)
    if block.drop_path is not None:
        x = block.drop_path(x)
    if block.downsample is not None:
        shortcut = block.downsample(shortcut)
    return _add(block, x, shortcut)


def _timm_basic_block(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    shortcut = x
    x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
    x = self.bn2(self.conv2(x))
    return self.act2(_timm_resnet_shortcut(self, x, shortcut))


def _timm_bottleneck(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    shortcut = x
    x = self.act1(self.bn1(self.conv1(x)))
    x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
    x = self.bn3(self.conv3(x))
    return self.act3(_timm_resnet_shortcut(self, x, shortcut))


@register_canonizer("torchvision.models.resnet.ResNet")
def _torchvision_resnet() -> Canonizer:
    from zennit.torchvision import ResNetCanonizer

    return ResNetCanonizer()


@register_canonizer("timm.models.resnet.ResNet")
def _timm_resnet() -> Canonizer:
    return CompositeCanonizer((
        ExactMergeBatchNorm(),
        ResidualSumCanonizer({"timm.models.resnet.BasicBlock": _timm_basic_block,
                              "timm.models.resnet.Bottleneck": _timm_bottleneck}),
    ))


@register_canonizer("timm.models.efficientnet.EfficientNet")
def _timm_efficientnet() -> Canonizer:
    blocks = "timm.models._efficientnet_blocks"
    return CompositeCanonizer((
        ExactMergeBatchNorm(),
        ResidualSumCanonizer({f"{blocks}.InvertedResidual": _timm_inverted_residual,
                              f"{blocks}.DepthwiseSeparableConv": _timm_depthwise_separable,
                              f"{blocks}.EdgeResidual": _timm_edge_residual,
                              f"{blocks}.ConvBnAct": _timm_conv_bn_act}),
    ))
