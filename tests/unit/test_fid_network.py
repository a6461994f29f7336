"""evals/fid.py: the FID network is the same whatever the caller's thread count, so two
processes of one machine (a 2-thread launcher, a 1-thread worker) score on one scale."""

from __future__ import annotations

import torch

from evals.fid import FeatureNetConfig, train_feature_net


def _train(threads: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=gen)
    targets = torch.randint(0, 4, (96, 2), generator=gen)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        net = train_feature_net(images, targets, (4, 4), FeatureNetConfig(steps=15, batch=32))
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    return net.state_dict()


def test_the_network_does_not_depend_on_the_callers_threads():
    one, two = _train(1), _train(2)
    assert all(torch.equal(one[k], two[k]) for k in one)
