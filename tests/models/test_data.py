from __future__ import annotations

import numpy as np
import torch

from geneattn.models._data import length_grouped_batches, mask_tokens, pad_batch, shard_batches


def test_masking_never_touches_pad_or_specials():
    seqs = [[2, 3, 4, 5, 6, 7, 8, 9] * 40, [3, 2] * 30 + [4]]  # cls/eos stand-ins are 2 and 3 here
    ids, attn = pad_batch(seqs, 0)
    gen = torch.Generator().manual_seed(0)
    specials = [0, 1, 2, 3]
    inputs, labels = mask_tokens(
        ids,
        attn,
        special_ids=specials,
        mask_id=1,
        vocab_size=20,
        probability=0.15,
        replace_prob=0.8,
        random_prob=0.1,
        generator=gen,
    )
    selected = labels != -100
    assert not (selected & (attn == 0)).any()
    for s in specials:
        assert not (selected & (ids == s)).any()
    assert torch.equal(labels[selected], ids[selected])
    eligible = (attn == 1) & (ids > 3)
    frac = selected.sum().item() / eligible.sum().item()
    assert 0.08 < frac < 0.25
    assert (inputs[selected] == 1).float().mean() > 0.6
    assert torch.equal(inputs[~selected], ids[~selected])
    assert not torch.isin(inputs[selected & (inputs != 1)], torch.tensor([0, 2, 3])).any()


def test_length_grouped_batches_cover_once_and_shard_evenly():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=103)
    batches = length_grouped_batches(np.arange(103), lengths, 8, rng, mega=4)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(103))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < np.ptp(lengths) / 3  # similar lengths batched together
    a, b = shard_batches(batches, 0, 2), shard_batches(batches, 1, 2)
    assert len(a) == len(b) == len(batches) // 2
