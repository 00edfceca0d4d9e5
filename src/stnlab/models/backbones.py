"""Classifier backbones: normalised image ``(B, C, S, S)`` → logits ``(B, num_classes)``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from stnlab.models.layers import conv_stack, flat_size, mlp


class CNN(nn.Module):
    """The paper's CNN: (conv k×k → ReLU → max-pool 2)×n → FC layers → logits.

    Defaults follow the paper's shape (9×9 then 7×7 kernels, each followed by 2×2 max
    pooling) with "same" padding, so the classifier sees ``S / 4`` × ``S / 4`` maps.
    """

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        num_classes: int,
        channels: Sequence[int] = (32, 32),
        kernels: Sequence[int] = (9, 7),
        hidden: Sequence[int] = (),
        pool: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers = conv_stack(in_channels, channels, kernels, pool, "CNN")
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        flat = flat_size(self.features, in_channels, input_size, "CNN backbone")
        head, width = mlp(flat, hidden)
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        self.classifier = nn.Sequential(head, *drop, nn.Linear(width, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, S, S)`` → ``(B, num_classes)``."""
        return self.classifier(self.features(x))

    def layer_outputs(self, x: Tensor) -> list[Tensor]:
        """The activations on the way to the logits for ``(B, C, S, S)``: the flattened
        conv features ``(B, F)``, each hidden FC layer's ``(B, width)``, then the logits
        ``(B, num_classes)`` (no softmax)."""
        return _hidden_and_logits(self.classifier, self.features(x))

    def stem(self, x: Tensor) -> Tensor:
        """The first conv block: ``(B, C, S, S)`` → ``(B, channels[0], S/2, S/2)``."""
        return self.features[:3](x)

    def head(self, h: Tensor) -> Tensor:
        """Everything after :meth:`stem`: feature maps → logits."""
        return self.classifier(self.features[3:](h))


class FCN(nn.Module):
    """Fully connected classifier: flatten → (FC → ReLU)×n → logits."""

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        num_classes: int,
        hidden: Sequence[int] = (128, 128, 128),
    ) -> None:
        super().__init__()
        head, width = mlp(in_channels * input_size * input_size, hidden)
        self.classifier = nn.Sequential(nn.Flatten(), head, nn.Linear(width, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, S, S)`` → ``(B, num_classes)``."""
        return self.classifier(x)

    def layer_outputs(self, x: Tensor) -> list[Tensor]:
        """Each hidden layer's activations ``(B, width)``, then the logits ``(B, num_classes)``."""
        return _hidden_and_logits(self.classifier, x)[1:]


def _hidden_and_logits(classifier: nn.Module, x: Tensor) -> list[Tensor]:
    """Run ``classifier`` on ``x``, keeping its input, every ReLU's output and the result."""
    outputs = [x]
    for layer in _leaves(classifier):
        x = layer(x)
        if isinstance(layer, nn.ReLU):
            outputs.append(x)
    return [*outputs, x]


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The layers of nested ``nn.Sequential`` containers, in order."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]
