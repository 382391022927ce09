"""The paper's models (examples/models.py) have torchvision's parameter counts, so the states the
benches move are the sizes the paper's evaluation moved; each runs on its input size."""

import pytest
import torch

from examples.models import PAPER_MODELS


@pytest.mark.parametrize("name", list(PAPER_MODELS))
def test_parameter_count_equals_torchvisions(name):
    build, expected = PAPER_MODELS[name]
    model = build()
    assert sum(p.numel() for p in model.parameters()) == expected
    side = 64 if name == "alexnet" else 32         # AlexNet's stride-4 stem needs >= 63x63
    with torch.no_grad():
        assert model(torch.randn(2, 3, side, side)).shape == (2, 1000)
