import torch

from tokensift.scores import key_diff_score, key_distance_to_mean, key_norm_score, random_scores


def test_key_norm_score_is_negative_l2_norm():
    keys = torch.tensor([[[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]]])
    torch.testing.assert_close(key_norm_score(keys), torch.tensor([[-5.0, -1.0, -10.0]]))


def test_key_diff_prefers_keys_unlike_the_mean():
    keys = torch.tensor([[[[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [-1.0, 0.0]]]])
    scores = key_diff_score(keys)
    assert scores.shape == (1, 1, 4)
    assert scores[0, 0].argmax() == 3  # the only key pointing the other way
    anchor = keys.mean(2, keepdim=True)
    expected = -torch.nn.functional.cosine_similarity(keys, anchor, dim=-1)
    torch.testing.assert_close(scores, expected)


def test_padding_is_left_out_of_the_mean_key():
    keys = torch.tensor([[[[100.0, 100.0], [1.0, 0.0], [0.0, 1.0]]]])
    mask = torch.tensor([[False, True, True]])
    distance = key_distance_to_mean(keys, mask=mask)
    torch.testing.assert_close(distance[0, 0, 1:], torch.full((2,), 0.5**0.5))
    unmasked = key_distance_to_mean(keys[:, :, 1:])
    torch.testing.assert_close(distance[0, 0, 1:], unmasked[0, 0])
    torch.testing.assert_close(key_diff_score(keys, mask=mask)[..., 1:], key_diff_score(keys[:, :, 1:]))


def test_random_scores_are_reproducible_and_seeded():
    a, b = random_scores((2, 10), seed=7), random_scores((2, 10), seed=7)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, random_scores((2, 10), seed=8))
    assert a.min() >= 0 and a.max() < 1
