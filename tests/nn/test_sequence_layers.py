"""What each sequence layer computes, on tiny hand-checkable cases (padding behaviour of
every layer is in test_padding.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adrank.nn.augru import (
    AUGRU,
    InterestExtractor,
    interest_auxiliary_loss,
    sample_negative_positions,
)
from adrank.nn.behavior_transformer import BehaviorTransformer
from adrank.nn.pooling import masked_softmax, recency_positions, select_top_k
from adrank.nn.qin import AdaptiveSparseTargetAttention, QuadraticLayer, QuadraticNetwork
from adrank.nn.simhash import ETA, SDIM
from adrank.nn.target_attention import Dice, DINAttention, MultiHeadTargetAttention
from adrank.nn.twin import TWINAttention

D = 4


def left_mask(lengths: list[int], length: int) -> torch.Tensor:
    return torch.stack([torch.arange(length) >= length - n for n in lengths])


def test_masked_softmax_and_top_k_helpers() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    w = masked_softmax(scores, mask)
    expected = torch.softmax(torch.tensor([1.0, 3.0]), 0)
    assert torch.equal(w[0], torch.stack([expected[0], torch.tensor(0.0), expected[1]]))
    assert torch.equal(w[1], torch.zeros(3))
    index, found = select_top_k(scores, mask, 3)
    assert index[0].tolist() == [2, 0, 1] and found[0].tolist() == [True, True, False]
    assert not found[1].any()
    assert recency_positions(torch.tensor([[False, True, True, True]])).tolist() == [[0, 3, 2, 1]]
    assert recency_positions(torch.tensor([[True, True, False]])).tolist() == [[2, 1, 0]]


def test_dice_uses_masked_batch_statistics_then_running_ones() -> None:
    dice = Dice(2, eps=1e-8, momentum=0.5)
    with torch.no_grad():
        dice.alpha.fill_(0.25)
    x = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, -100.0]]])  # last position padded
    mask = torch.tensor([[True, True, False]])
    out = dice(x, mask)
    mean, var = torch.tensor([2.0, 4.0]), torch.tensor([1.0, 4.0])  # of the 2 real rows
    p = torch.sigmoid((x - mean) / torch.sqrt(var + 1e-8))
    torch.testing.assert_close(out, p * x + (1 - p) * 0.25 * x)
    torch.testing.assert_close(dice.running_mean, 0.5 * mean)
    torch.testing.assert_close(dice.running_var, 0.5 + 0.5 * var)
    before = dice.running_mean.clone()
    dice(x, torch.zeros_like(mask))  # nothing real: running statistics kept
    torch.testing.assert_close(dice.running_mean, before)
    dice.eval()
    p = torch.sigmoid((x - dice.running_mean) / torch.sqrt(dice.running_var + 1e-8))
    torch.testing.assert_close(dice(x), p * x + (1 - p) * 0.25 * x)


def test_din_attention_is_an_unnormalised_weighted_sum() -> None:
    torch.manual_seed(0)
    din = DINAttention(D, hidden_units=())  # the score is one linear map of [h, t, h-t, h*t]
    hist = torch.randn(1, 3, D)
    target = torch.randn(1, D)
    mask = torch.tensor([[False, True, True]])
    out = din(target, hist, mask)
    expected = torch.zeros(D)
    weights = []
    for pos in (1, 2):
        h, t = hist[0, pos], target[0]
        w = din.score(torch.cat([h, t, h - t, h * t]))
        weights.append(w)
        expected = expected + w * h
    torch.testing.assert_close(out[0], expected)
    din.softmax = True
    norm = torch.softmax(torch.cat(weights), 0)
    torch.testing.assert_close(
        din(target, hist, mask)[0], norm[0] * hist[0, 1] + norm[1] * hist[0, 2]
    )


def test_din_attention_takes_a_target_per_behaviour() -> None:
    """A (B, K, L, D) target scores behaviour l against its own vector t_l (DMIN's
    position-aware target); repeating one target along L is the (B, K, D) case."""
    torch.manual_seed(0)
    din = DINAttention(D, hidden_units=(), softmax=True)
    hist = torch.randn(2, 4, D)
    mask = torch.tensor([[False, True, True, True], [True, True, True, True]])
    target = torch.randn(2, 3, D)  # K = 3 candidates
    per_behaviour = target.unsqueeze(2).expand(-1, -1, 4, -1)
    torch.testing.assert_close(din(per_behaviour, hist, mask), din(target, hist, mask))
    varying = torch.randn(2, 3, 4, D)
    out = din(varying, hist, mask)
    b, k = 1, 2
    pairs = zip(hist[b], varying[b, k], strict=True)
    scores = torch.cat([din.score(torch.cat([h, t, h - t, h * t])) for h, t in pairs])
    torch.testing.assert_close(out[b, k], torch.softmax(scores, 0) @ hist[b])


def test_target_attention_matches_torch_multihead_attention() -> None:
    torch.manual_seed(0)
    ours = MultiHeadTargetAttention(D, attention_dim=D, num_heads=2)
    ref = nn.MultiheadAttention(D, 2, bias=False, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key.weight, ours.value.weight]))
        ref.out_proj.weight.copy_(ours.output.weight)
    hist, target = torch.randn(3, 5, D), torch.randn(3, D)
    mask = left_mask([5, 2, 1], 5)
    expected, _ = ref(target.unsqueeze(1), hist, hist, key_padding_mask=~mask)
    torch.testing.assert_close(ours(target, hist, mask), expected.squeeze(1))


def test_interest_extractor_equals_a_gru_on_unpadded_histories() -> None:
    torch.manual_seed(0)
    ext = InterestExtractor(D, 3)
    gru = nn.GRU(D, 3, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(gru, f"{name}_l0").copy_(getattr(ext.cell, name))
    hist = torch.randn(2, 4, D)
    expected, _ = gru(hist)
    torch.testing.assert_close(ext(hist, torch.ones(2, 4, dtype=torch.bool)), expected)


def test_augru_update_gate_is_scaled_by_attention() -> None:
    torch.manual_seed(0)
    augru = AUGRU(D, D, hidden_dim=3)
    interests, target = torch.randn(1, 1, D), torch.randn(1, D)
    mask = torch.ones(1, 1, dtype=torch.bool)
    # one real step: attention 1, h0 = 0 -> h = u * tanh(W_c i + b_c) (reset acts on U_h 0 = 0)
    gates = augru.input_gates(interests[0, 0])
    _, u, c = gates.chunk(3)
    torch.testing.assert_close(augru(target, interests, mask)[0], torch.sigmoid(u) * torch.tanh(c))
    # with three steps the attention of each step equals softmax(i_t W e_target)
    interests = torch.randn(1, 3, D)
    att = augru.attention_scores(target.unsqueeze(1), interests, torch.ones(1, 3, dtype=torch.bool))
    expected = torch.softmax(interests[0] @ augru.attention(target[0]), 0)
    torch.testing.assert_close(att[0, 0], expected)


def test_negative_sampling_avoids_the_users_history() -> None:
    ids = torch.tensor([[0, 0, 2, 3], [0, 4, 5, 6], [2, 3, 4, 5], [0, 0, 0, 0]])
    mask = ids != 0
    index, valid = sample_negative_positions(ids, mask, torch.Generator().manual_seed(0), 8)
    negatives = ids.reshape(-1)[index]
    assert not valid[~mask].any()  # never at padding
    for row in range(4):
        own = set(ids[row][mask[row]].tolist())
        for pos in range(4):
            if valid[row, pos]:
                assert negatives[row, pos].item() not in own | {0}
    assert valid[0].sum() == 2 and valid[1].sum() == 3  # rows with other items to draw
    # row 2's history holds {2,3,4,5}: only 6 is left, drawn with probability 1/5 per try
    assert set(negatives[2][valid[2]].tolist()) <= {6}


def test_auxiliary_loss_by_hand_and_empty() -> None:
    interests = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    history = torch.tensor([[[9.0, 9.0], [2.0, 0.0], [0.0, 3.0]]])
    negatives = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, -1.0]]])
    mask = torch.tensor([[False, True, True]])  # only the pair (t=1, t+1=2) is real
    loss = interest_auxiliary_loss(interests, history, negatives, mask)
    pos, neg = torch.tensor(3.0), torch.tensor(-1.0)  # <h_1, e_2>, <h_1, e^_2>
    torch.testing.assert_close(loss, -(F.logsigmoid(pos) + F.logsigmoid(-neg)))
    empty = interest_auxiliary_loss(interests, history, negatives, torch.zeros_like(mask))
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="one shape"):
        interest_auxiliary_loss(interests, history[..., :1], negatives, mask)


def test_bst_zeroes_padded_rows_and_ranks_positions_by_recency() -> None:
    torch.manual_seed(0)
    bst = BehaviorTransformer(D, num_heads=2, max_len=2)
    hist, target = torch.randn(2, 3, D), torch.randn(2, D)
    mask = left_mask([1, 3], 3)
    out, out_mask = bst(target, hist, mask)
    assert out.shape == (2, 4, D) and out_mask.tolist() == [[False, False, True, True], [True] * 4]
    assert torch.equal(out[0, :2], torch.zeros(2, D))
    candidates, cand_mask = bst(torch.randn(2, 5, D), hist, mask)
    assert candidates.shape == (2, 5, 4, D) and cand_mask.shape == (2, 5, 4)


def sdim_reference(sdim: SDIM, hist: torch.Tensor, mask: torch.Tensor, t: torch.Tensor):
    """Brute force: per hash, sum the real behaviours whose bucket is the target's; mean."""
    codes_h, codes_t = sdim.codes(hist), sdim.codes(t)  # (B, L, m), (B, m)
    same = (codes_h == codes_t.unsqueeze(1)) & mask.unsqueeze(-1)  # (B, L, m)
    return torch.einsum("blm,bld->bd", same.float(), hist) / sdim.num_hashes


def test_sdim_equals_brute_force_collisions() -> None:
    torch.manual_seed(0)
    sdim = SDIM(D, num_hashes=3, hash_bits=2, seed=4)
    hist, target = torch.randn(3, 7, D), torch.randn(3, D)
    mask = left_mask([7, 3, 0], 7)
    torch.testing.assert_close(sdim(target, hist, mask), sdim_reference(sdim, hist, mask, target))
    state = sdim.encode_history(hist, mask)
    assert state.buckets.shape == (3, 3, 4, D)  # (B, m, 2^tau, D): no L left in the state


def test_sdim_codes_are_the_hash_bits_read_as_binary_numbers() -> None:
    sdim = SDIM(D, num_hashes=5, hash_bits=3, seed=1)
    x = torch.randn(2, 9, D)
    bits = sdim.hash(x).unflatten(-1, (5, 3)).long()  # (B, L, m, tau), bit j worth 2^j
    expected = (bits * (2 ** torch.arange(3))).sum(-1)
    assert torch.equal(sdim.codes(x), expected)
    assert sdim.codes(x).dtype == torch.long


# the dense one-hot path up to 4 bits, the sparse one above
@pytest.mark.parametrize("hash_bits", [1, 4, 5])
def test_sdim_bucket_sums_match_brute_force_on_both_paths(
    hash_bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adrank.nn.simhash as simhash

    torch.manual_seed(1)
    sdim = SDIM(D, num_hashes=6, hash_bits=hash_bits, seed=2)
    hist, target = torch.randn(4, 11, D), torch.randn(4, 3, D)
    mask = left_mask([11, 6, 1, 0], 11)
    dense = sdim(target, hist, mask)
    reference = torch.stack(
        [sdim_reference(sdim, hist, mask, target[:, k]) for k in range(3)], dim=1
    )
    torch.testing.assert_close(dense, reference, rtol=0, atol=1e-6)
    monkeypatch.setattr(simhash, "ONE_HOT_MAX_BUCKETS", 0)  # force scatter_add
    torch.testing.assert_close(sdim(target, hist, mask), dense, rtol=0, atol=1e-6)
    # gradients reach the history the same way on both paths
    grads = []
    for limit in (0, 1 << 16):
        monkeypatch.setattr(simhash, "ONE_HOT_MAX_BUCKETS", limit)
        h = hist.clone().requires_grad_(True)
        sdim(target, h, mask).square().sum().backward()
        grads.append(h.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-5)
    assert torch.equal(grads[0][3], torch.zeros_like(grads[0][3]))  # empty history: no gradient


def test_sdim_user_state_is_shared_by_all_candidates() -> None:
    """One user, K candidates: hashing/aggregating the history once and reading K candidates
    from the state equals scoring every candidate with its own full pass."""
    torch.manual_seed(0)
    sdim = SDIM(D, num_hashes=8, hash_bits=3)
    hist = torch.randn(1, 20, D)
    mask = left_mask([13], 20)
    candidates = torch.randn(10, D)
    state = sdim.encode_history(hist, mask)
    shared = sdim.attend(state, candidates)  # (K, D)
    one_by_one = torch.cat([sdim(c.view(1, D), hist, mask) for c in candidates])
    torch.testing.assert_close(shared, one_by_one, rtol=0, atol=1e-6)
    assert shared.abs().sum() > 0
    torch.testing.assert_close(sdim.attend(state, candidates.unsqueeze(0))[0], shared)


def test_eta_retrieves_the_hamming_nearest_behaviours() -> None:
    torch.manual_seed(0)
    eta = ETA(D, num_bits=8, top_k=2)
    hist, target = torch.randn(1, 6, D), torch.randn(1, D)
    mask = left_mask([5], 6)
    state = eta.encode_history(hist, mask)
    index, found = eta.retrieve(state, target.unsqueeze(1))
    distance = (eta.hash(hist[0]) != eta.hash(target[0])).sum(-1)
    best = sorted(range(1, 6), key=lambda j: (distance[j].item(), -j))[:2]  # ties: recent
    assert index[0, 0].tolist() == best and found.all()
    # all retrieved: the same as attending over the whole history
    eta.top_k = 10
    expected = eta.attention(target, hist, mask)
    torch.testing.assert_close(eta(target, hist, mask), expected)


def test_twin_gsu_and_esu_share_one_relevance() -> None:
    torch.manual_seed(0)
    twin = TWINAttention(D, top_k=2, num_heads=2, num_cross=1, cross_dim=2)
    with torch.no_grad():
        twin.cross_beta.normal_()
    hist, target = torch.randn(1, 5, D), torch.randn(1, D)
    cross = torch.randn(1, 5, 1, 2)
    mask = left_mask([4], 5)
    state = twin.encode_history(hist, mask, cross)
    alpha = twin.relevance(state, target.unsqueeze(1))[0, 0]  # (H, L)
    keep = alpha.mean(0).masked_fill(~mask[0], -1e9).topk(2).indices  # GSU
    weights = torch.softmax(alpha[:, keep], -1)  # ESU on the same alpha
    values = state.values[0, keep].view(2, 2, 2).transpose(0, 1)  # (H, k, Dh)
    expected = twin.output((weights.unsqueeze(1) @ values).flatten())
    torch.testing.assert_close(twin.attend(state, target)[0], expected)
    # the cross bias is (K_c W_c) beta
    compressed = (cross[0, :, 0] * twin.cross_compress[0]).sum(-1)  # (L,)
    bias = compressed.unsqueeze(0) * twin.cross_beta[0].unsqueeze(1)  # (H, L)
    torch.testing.assert_close(state.cross_bias[0, :, mask[0]], bias[:, mask[0]])
    with pytest.raises(ValueError, match="cross features must be"):
        twin.encode_history(hist, mask)


def test_qin_attention_is_sparse_and_unnormalised() -> None:
    torch.manual_seed(0)
    qin = AdaptiveSparseTargetAttention(D, num_heads=1)
    hist, target = torch.randn(1, 6, D), torch.randn(1, D)
    mask = torch.ones(1, 6, dtype=torch.bool)
    q, k, v = qin.query(target[0]), qin.key(hist[0]), qin.value(hist[0])
    weights = torch.relu(k @ q / (2 * D) ** 0.5)
    assert (weights == 0).any() and (weights > 0).any()  # some behaviours are cut out
    expected = qin.output(weights @ v) + target[0]
    torch.testing.assert_close(qin(target, hist, mask)[0], expected)


def test_quadratic_layer_and_network_by_hand() -> None:
    layer = QuadraticLayer(2, num_row=2)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0]]))
        layer.linear.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]))
    x = torch.tensor([[3.0, 5.0]])
    # rows: W_1 x + b_1 = (3, 6), W_2 x + b_2 = (6, 0); x * (9, 6) = (27, 30)
    assert torch.equal(layer(x), torch.tensor([[27.0, 30.0]]))
    net = QuadraticNetwork(6, num_layers=2, num_row=3, batch_norm=True, dropout=0.1)
    assert net(torch.randn(4, 6)).shape == (4, 1)
    assert QuadraticNetwork(6, output_dim=None)(torch.randn(4, 6)).shape == (4, 6)


def test_layers_name_bad_shapes() -> None:
    din = DINAttention(D)
    with pytest.raises(ValueError, match=r"mask must be bool \(2, 3\)"):
        din(torch.randn(2, D), torch.randn(2, 3, D), torch.ones(2, 3))
    with pytest.raises(ValueError, match="target must be"):
        din(torch.randn(2, 1, 1, D), torch.randn(2, 3, D), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="target must be"):
        din(torch.randn(2, 1, 1, 1, D), torch.randn(2, 3, D), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        MultiHeadTargetAttention(D, num_heads=3)
