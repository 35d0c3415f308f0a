"""What the builders read from a config section, as typing Protocols: `models/` needs nothing from `pipelines/`,
and any object with these attributes (the pipeline's frozen config sections, a test's namespace) will do."""

from __future__ import annotations

from typing import Protocol


class ModelSettings(Protocol):
    filters: tuple[int, ...]  # convolution filters per block (resnet: per stage)
    kernel_sizes: tuple[int, ...]  # cnn1d: kernel size per block (the last repeats)
    pool_size: int  # cnn1d: max pooling between blocks (1: none)
    units: int  # recurrent: units of the LSTM or GRU
    dense_units: int
    hidden_layers: int  # mlp only
    bottleneck: int  # filters of a 1x1 convolution before the head (0: none)
    downsample: str  # small_cnn: 'pool' (convolution, then max pooling) or 'stride' (a stride-2 convolution)
    separable_from: int  # small_cnn: input side from which blocks are depthwise-separable and pooled globally
    cell: str  # recurrent: lstm or gru
    batch_norm: bool
    initializer: str
    dropout_rate: float
    l1: float
    l2: float


class GanSettings(Protocol):
    latent_dim: int
    base_filters: int
    minibatch_std: bool


class BackboneSettings(Protocol):
    kind: str  # hub, applications, or one of the project's own kinds (loaded from `pretrained`)
    handle: str
    application: str
    weights: str
