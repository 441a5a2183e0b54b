"""Reference PyTorch modules for the converter tests, written from the published architectures.

arcface_torch ``backbones/iresnet.py`` (IResNet) and facenet-pytorch ``models/inception_resnet_v1.py``
(InceptionResnetV1), with the upstream attribute names so that their ``state_dict()`` keys are the
upstream ones; plus helpers that give them random but realistic weights. torch is a test-only dependency.
"""

import keras
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# Reference PyTorch modules: arcface_torch's IResNet.


class IBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0], stride=2)
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.features = nn.BatchNorm1d(512, eps=1e-05)

    def _make_layer(self, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=1e-05),
            )
        layers = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


# ---------------------------------------------------------------------------------------------------------
# Reference PyTorch modules: facenet-pytorch's InceptionResnetV1.


class BasicConv2d(nn.Module):
    def __init__(self, in_planes, out_planes, kernel_size, stride, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=0.001, momentum=0.1, affine=True)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Block35(nn.Module):
    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(256, 32, 1, 1)
        self.branch1 = nn.Sequential(BasicConv2d(256, 32, 1, 1), BasicConv2d(32, 32, 3, 1, padding=1))
        self.branch2 = nn.Sequential(
            BasicConv2d(256, 32, 1, 1),
            BasicConv2d(32, 32, 3, 1, padding=1),
            BasicConv2d(32, 32, 3, 1, padding=1),
        )
        self.conv2d = nn.Conv2d(96, 256, 1, stride=1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1))
        return self.relu(out * self.scale + x)


class Block17(nn.Module):
    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(896, 128, 1, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(896, 128, 1, 1),
            BasicConv2d(128, 128, (1, 7), 1, padding=(0, 3)),
            BasicConv2d(128, 128, (7, 1), 1, padding=(3, 0)),
        )
        self.conv2d = nn.Conv2d(256, 896, 1, stride=1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x)), 1))
        return self.relu(out * self.scale + x)


class Block8(nn.Module):
    def __init__(self, scale=1.0, noReLU=False):  # noqa: N803 (upstream's name)
        super().__init__()
        self.scale = scale
        self.noReLU = noReLU
        self.branch0 = BasicConv2d(1792, 192, 1, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(1792, 192, 1, 1),
            BasicConv2d(192, 192, (1, 3), 1, padding=(0, 1)),
            BasicConv2d(192, 192, (3, 1), 1, padding=(1, 0)),
        )
        self.conv2d = nn.Conv2d(384, 1792, 1, stride=1)
        if not self.noReLU:
            self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x)), 1)) * self.scale + x
        return out if self.noReLU else self.relu(out)


class Mixed_6a(nn.Module):  # noqa: N801 (upstream's name)
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, 2)
        self.branch1 = nn.Sequential(
            BasicConv2d(256, 192, 1, 1), BasicConv2d(192, 192, 3, 1, padding=1), BasicConv2d(192, 256, 3, 2)
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Mixed_7a(nn.Module):  # noqa: N801 (upstream's name)
    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(896, 256, 1, 1), BasicConv2d(256, 384, 3, 2))
        self.branch1 = nn.Sequential(BasicConv2d(896, 256, 1, 1), BasicConv2d(256, 256, 3, 2))
        self.branch2 = nn.Sequential(
            BasicConv2d(896, 256, 1, 1), BasicConv2d(256, 256, 3, 1, padding=1), BasicConv2d(256, 256, 3, 2)
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class InceptionResnetV1(nn.Module):
    def __init__(self, dropout_prob=0.6):
        super().__init__()
        self.conv2d_1a = BasicConv2d(3, 32, 3, 2)
        self.conv2d_2a = BasicConv2d(32, 32, 3, 1)
        self.conv2d_2b = BasicConv2d(32, 64, 3, 1, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3, 1)
        self.conv2d_4b = BasicConv2d(192, 256, 3, 2)
        self.repeat_1 = nn.Sequential(*[Block35(scale=0.17) for _ in range(5)])
        self.mixed_6a = Mixed_6a()
        self.repeat_2 = nn.Sequential(*[Block17(scale=0.10) for _ in range(10)])
        self.mixed_7a = Mixed_7a()
        self.repeat_3 = nn.Sequential(*[Block8(scale=0.20) for _ in range(5)])
        self.block8 = Block8(noReLU=True)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout_prob)
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=0.001, momentum=0.1, affine=True)

    def forward(self, x):
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a"):
            x = getattr(self, name)(x)
        x = self.conv2d_4b(x)
        x = self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x))))
        x = self.block8(self.repeat_3(x))
        x = self.dropout(self.avgpool_1a(x))
        x = self.last_bn(self.last_linear(x.view(x.shape[0], -1)))
        return F.normalize(x, p=2, dim=1)


# ---------------------------------------------------------------------------------------------------------
# Helpers.


@torch.no_grad()
def randomise(module: nn.Module, seed: int, calibration: torch.Tensor) -> nn.Module:
    """Random parameters and batch-norm statistics at a realistic scale; returns ``module`` in eval mode.

    Weights are He-normal, biases, BN affines and PReLU slopes uniform. BN running statistics are measured
    on ``calibration`` (so every layer sees roughly unit-variance activations, as in a trained net), then
    perturbed: variances times U[0.8, 1.25], means shifted by 0.1 standard deviations at random (wider
    perturbations compound through 24 residual blocks into outputs of ~50, which would make an absolute
    tolerance meaningless).
    """
    torch.manual_seed(seed)
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.weight.normal_(0.0, (2.0 / m.weight[0].numel()) ** 0.5)
            if m.bias is not None:
                m.bias.uniform_(-0.2, 0.2)
        elif isinstance(m, nn.PReLU):
            m.weight.uniform_(0.05, 0.5)
    for m in norms:
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets the statistics
    module.train()
    module(calibration)
    for m in norms:
        if isinstance(m, nn.BatchNorm1d):
            # A few calibration samples are too few for 512 separate variances (a small one blows its
            # feature up): the embedding norms get the pooled variance.
            m.running_var.fill_(m.running_var.mean())
        m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.8, 1.25))
        m.running_mean.add_(0.1 * torch.randn_like(m.running_mean) * m.running_var.sqrt())
        m.momentum = 0.1
    return module.eval()


def numpy_state(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def run(model: keras.Model, x: np.ndarray):
    """An eager inference call (much cheaper than ``predict``'s tracing for one small batch)."""
    out = model(x, training=False)
    return [np.asarray(o) for o in out] if isinstance(out, list | tuple) else np.asarray(out)


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def images(size: int, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(np.float32)


def iresnet_input(x: np.ndarray) -> torch.Tensor:
    """arcface_torch's preprocessing of ``x`` = pixel / 255: ``(x - 0.5) / 0.5``, NCHW."""
    return torch.from_numpy((x - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()


def facenet_input(x: np.ndarray) -> torch.Tensor:
    """facenet-pytorch's ``fixed_image_standardization`` of pixels ``x * 255``, NCHW."""
    return torch.from_numpy((x * 255.0 - 127.5) / 128.0).permute(0, 3, 1, 2).contiguous()
