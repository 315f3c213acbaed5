"""Which parameters channel-mode early stopping freezes: the conv that produces the
watched layer's output channels (inside containers such as torchvision's ResNet blocks),
with the per-channel normalisation after it; cross-channel normalisation is refused."""
import pytest
import torch
import torch.nn as nn
import torchvision

from torch_geometry.callbacks import NNKEarlyStopping

from test_frozen_channels import probe


def resnet_probe(n=24):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 4


@pytest.mark.parametrize("layer,conv,norms", [
    ("layer1", "layer1.1.conv2", ["layer1.1.bn2"]),
    ("layer4", "layer4.1.conv2", ["layer4.1.bn2"]),
    # A block with a projection shortcut: the last registered conv of the right width.
    ("layer2.0", "layer2.0.downsample.0", ["layer2.0.downsample.1"]),
    ("relu", "conv1", ["bn1"]),
    ("conv1", "conv1", []),
])
def test_resnet_layers_resolve_to_the_conv_producing_their_channels(layer, conv, norms):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4)
    es = NNKEarlyStopping(model, layer, resnet_probe(), k=5, verbose=False)
    assert es.conv_name == conv and es.norm_names == norms


def test_resnet_block_freezes_its_conv_and_batchnorm_channels():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4)
    x, y = resnet_probe()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    es = NNKEarlyStopping(model, "layer4", (x, y), patience=1, k=5, verbose=False, optimizer=opt)
    scores = iter([[0.5] * 512, [0.5] + [0.4] * 511])
    es._score = lambda acts: next(scores)
    es.step(0)
    es.step(1)
    assert es.frozen_channels == [0]
    block = model.layer4[1]
    before = [t.detach()[0].clone() for t in (block.conv2.weight, block.bn2.weight, block.bn2.bias)]
    others = block.conv2.weight.detach()[1:].clone()
    model.train()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    after = [t.detach()[0] for t in (block.conv2.weight, block.bn2.weight, block.bn2.bias)]
    assert all(torch.equal(a, b) for a, b in zip(after, before))
    assert not torch.equal(block.conv2.weight.detach()[1:], others)


def test_cross_channel_normalisation_after_the_conv_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3))
    with pytest.raises(ValueError, match=r"'1' \(GroupNorm\) normalises across channels"):
        NNKEarlyStopping(model, "2", probe(), k=5, verbose=False)


def test_no_conv_with_the_layers_channel_count_is_explained():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 1, bias=False),
                          nn.Identity())
    model[2].out_channels = 5        # a conv whose declared channels do not match its output
    with pytest.raises(ValueError, match="no convolution with 6 output channels"):
        NNKEarlyStopping(model, "3", probe(), k=5, verbose=False)
    with pytest.raises(ValueError, match="conv='0' has 4 output channels but layer '3' outputs 6"):
        NNKEarlyStopping(model, "3", probe(), k=5, verbose=False, conv="0")
