"""Neural-network building blocks with PyTorch's names: Module, layers, recurrent layers,
attention and Transformer encoder layers, init.

>>> import dlrun
>>> from dlrun import nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> model(dlrun.randn(3, 4)).shape
(3, 2)
"""

from dlrun.nn import init
from dlrun.nn.layers import (
    GELU,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    Unflatten,
)
from dlrun.nn.module import IncompatibleKeys, Module, ModuleDict, ModuleList, Parameter, Sequential
from dlrun.nn.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell
from dlrun.nn.transformer import MultiheadAttention, TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "init", "Module", "ModuleList", "ModuleDict", "Sequential", "Parameter", "IncompatibleKeys",
    "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "Unflatten", "Dropout", "Embedding",
    "ReLU", "Tanh", "Sigmoid", "GELU", "LeakyReLU", "Softmax", "LogSoftmax", "Identity",
    "LayerNorm", "BatchNorm1d", "BatchNorm2d", "RNNBase", "RNN", "LSTM", "GRU", "RNNCell",
    "LSTMCell", "GRUCell", "MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder",
]
