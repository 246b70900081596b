"""Support prototypes (masked average pooling, k-means) and the prompter that turns them into tokens."""

from __future__ import annotations

import pytest
import torch

from samadapt.errors import UserError
from samadapt.modeling.prototypes import PrototypePrompter, compute_prototypes, weighted_kmeans


def test_prototype_is_the_masked_mean_of_the_features():
    features = torch.randn(2, 8, 4, 4)
    masks = torch.zeros(2, 16, 16, dtype=torch.long)
    masks[0, :8, :8] = 1  # exactly the 2×2 top-left feature cells of image 0
    masks[1, 8:, 4:8] = 1  # cells (2, 1), (3, 1) of image 1 ...
    masks[1, 8:, 8:10] = 1  # ... plus half of cells (2, 2), (3, 2): weight 0.5
    got = compute_prototypes(features, masks, None, num_classes=1)
    cells = [features[0, :, :2, :2].reshape(8, -1), features[1, :, 2:, 1].reshape(8, -1)]
    half = features[1, :, 2:, 2].reshape(8, -1)
    expected = (torch.cat(cells, 1).sum(1) + 0.5 * half.sum(1)) / (4 + 2 + 0.5 * 2)
    torch.testing.assert_close(got.foreground[0, 0], expected)
    weights_bg = 1 - torch.nn.functional.adaptive_avg_pool2d((masks == 1).float()[:, None], 4)[:, 0]
    expected_bg = (features * weights_bg[:, None]).sum((0, 2, 3)) / weights_bg.sum()
    torch.testing.assert_close(got.background[0], expected_bg)
    assert got.foreground.shape == (1, 1, 8)


def test_padding_is_not_background_and_missing_class_is_refused():
    features = torch.ones(1, 4, 2, 2)
    features[..., 1] = 5.0  # right column: padding
    masks = torch.zeros(1, 8, 8, dtype=torch.long)
    valid = torch.zeros(1, 8, 8, dtype=torch.bool)
    valid[..., :4] = True
    masks[0, :4, :4] = 1
    got = compute_prototypes(features, masks, valid, 1)
    torch.testing.assert_close(got.background[0], torch.ones(4))
    with pytest.raises(UserError, match="no pixel of liver"):
        compute_prototypes(features, torch.zeros(1, 8, 8, dtype=torch.long), None, 1, class_names=["liver"])


def test_kmeans_prototypes_find_two_clusters_and_positions_follow():
    vectors = torch.cat([torch.zeros(5, 3), torch.full((5, 3), 4.0)]) + 0.01 * torch.randn(10, 3)
    centres, assignment = weighted_kmeans(vectors, torch.ones(10), 2)
    assert sorted(centres.mean(1).round().tolist()) == [0.0, 4.0]
    assert len(set(assignment[:5].tolist())) == 1 and assignment[0] != assignment[9]
    features = torch.zeros(1, 3, 2, 2)
    features[0, :, 0, 1] = 4.0
    masks = torch.ones(1, 4, 4, dtype=torch.long)
    masks[0, 2:, :] = 0
    positions = torch.arange(12, dtype=torch.float32).reshape(3, 2, 2)
    got = compute_prototypes(features, masks, None, 1, per_class=2, positions=positions)
    assert got.foreground.shape == (1, 2, 3)
    assert sorted(got.foreground[0].mean(1).tolist()) == [0.0, 4.0]
    torch.testing.assert_close(got.background_position[0], positions[:, 1].mean(1))


def test_prompter_builds_one_query_per_class():
    prototypes = compute_prototypes(torch.randn(1, 256, 4, 4), torch.randint(0, 3, (1, 16, 16)), None, 2,
                                    positions=torch.randn(256, 4, 4))
    tokens = PrototypePrompter()(prototypes, batch_size=3)
    assert tokens.shape == (3, 2, 1 + 1 + 1, 256)
