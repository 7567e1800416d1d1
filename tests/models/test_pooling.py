"""Masked mean pooling through hooks: equal to a hand-written pooled classifier, padding-blind, and
kept by saving, loading and fine-tuning."""

from __future__ import annotations

import json

import pytest
import torch

from geneattn import InputError
from geneattn.models import FinetuneConfig, finetune, load, save_model
from geneattn.models._pooling import use_pooling


@pytest.fixture(scope="module")
def clf(pretrained):
    return use_pooling(load(pretrained, task="classifier", num_labels=3), "mean").eval()


def _manual_logits(model, ids, mask):
    """classifier(tanh(dense(mean of the last hidden states over unpadded tokens))), by hand."""
    hidden = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    mean = (hidden * m).sum(1) / m.sum(1)
    return model.classifier(model.bert.pooler.activation(model.bert.pooler.dense(mean)))


def _batch():
    ids = torch.tensor([[5, 9, 14, 22, 3, 7], [11, 4, 30, 0, 0, 0]])
    return ids, (ids != 0).long()


def test_mean_pooling_equals_the_hand_written_pooled_classifier(clf):
    ids, mask = _batch()
    with torch.no_grad():
        got = clf(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(got, _manual_logits(clf, ids, mask))


def test_mean_pooling_ignores_padding_and_differs_from_the_first_token(clf, pretrained):
    ids, mask = _batch()
    with torch.no_grad():
        batched = clf(input_ids=ids, attention_mask=mask).logits[1]
        alone = clf(input_ids=ids[1:, :3], attention_mask=mask[1:, :3]).logits[0]
        torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
        plain = load(pretrained, task="classifier", num_labels=3).eval()
        plain.load_state_dict(clf.state_dict())
        assert not torch.allclose(
            plain(input_ids=ids, attention_mask=mask).logits, clf(input_ids=ids, attention_mask=mask).logits
        )


def test_saved_mean_pooling_model_loads_with_its_pooling(clf, tmp_path):
    ids, mask = _batch()
    save_model(clf, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["geneattn_pooling"] == "mean"
    again = load(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, attention_mask=mask).logits,
                                   clf(input_ids=ids, attention_mask=mask).logits)  # fmt: skip
    use_pooling(again)  # hooks are attached once
    assert len(again.bert.pooler._forward_pre_hooks) == 1
    with pytest.raises(InputError, match="cannot switch back"):
        use_pooling(again, "cls")


def test_finetune_with_mean_pooling_records_it(tokens, pretrained, tmp_path):
    cfg = FinetuneConfig(
        epochs=1, batch_size=8, learning_rate=1e-3, pooling="mean", baselines=False, n_boot=10
    )
    result = finetune(tokens, model=pretrained, out=tmp_path / "clf", config=cfg, seed=0)
    assert result.metrics["pooling"] == "mean"
    assert load(result.model_dir).config.geneattn_pooling == "mean"
    with pytest.raises(InputError, match="pooling must be one of"):
        FinetuneConfig(pooling="max")
