"""Small convolutional networks for MNIST-like (1 channel) and CIFAR-like (3 channel) inputs."""

from torch import nn


def cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """The CNN matching the number of input channels."""
    channels, height, width = input_shape
    if channels not in (1, 3):
        raise ValueError(f"cnn supports 1 or 3 input channels, got {channels}")
    min_side = 4 if channels == 1 else 8  # the pooling stages must leave >= 1 pixel
    if min(height, width) < min_side:
        raise ValueError(f"cnn needs inputs of at least {min_side}x{min_side}, got {height}x{width}")
    if channels == 1:
        return mnist_cnn(height, width, num_classes)
    return cifar_cnn(height, width, num_classes)


def mnist_cnn(height: int, width: int, num_classes: int) -> nn.Sequential:
    """The paper's MNIST CNN: two 5x5 conv, ReLU, max-pool blocks (16, 32 channels; `conv_block`) and a linear
    classifier."""
    features = 32 * (height // 4) * (width // 4)  # two floor-halvings by max-pool
    return nn.Sequential(
        *conv_block(1, 16, kernel_size=5),
        *conv_block(16, 32, kernel_size=5),
        nn.Flatten(),
        nn.Linear(features, num_classes),
    )


def cifar_cnn(height: int, width: int, num_classes: int) -> nn.Sequential:
    """Three 3x3 conv + max-pool blocks (16, 32, 64 channels), then a 500-unit hidden layer."""
    layers: list[nn.Module] = []
    in_channels = 3
    for out_channels in (16, 32, 64):
        layers += conv_block(in_channels, out_channels, kernel_size=3)
        in_channels = out_channels
        height, width = height // 2, width // 2
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(in_channels * height * width, 500),
        nn.ReLU(),
        nn.Linear(500, num_classes),
    )


def conv_block(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    """A same-size convolution, ReLU and 2x2 max-pool, pooled before the ReLU. The two commute exactly (ReLU
    is monotone, and a window's gradient reaches the same first maximal element or is zeroed either way), so
    values and gradients are those of conv-ReLU-pool to the last bit, with the ReLU on a quarter of the
    elements (`python -m adabatch_bench.pool_order` prints what that saves a CPU step)."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2),
        nn.MaxPool2d(2),
        nn.ReLU(),
    ]
