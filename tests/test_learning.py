"""The detector at the demo's width learns short moments in long recordings: on one fixed batch
of 300-frame recordings, each with a 1-4-frame moment, repeated steps make its top-1 window
find them. Slow (a few minutes on 2 cores): `pytest -m slow tests/test_learning.py`."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from model_batches import make_batch, no_dropout, small_config

from amr.engine.loop import build_optimizer, weighted_total
from amr.evaluation.metrics import evaluate_predictions
from amr.losses import build_criterion
from amr.model import build_model
from amr.model.postprocess import predict_windows

FRAMES, QUERIES, STEPS, EVERY = 300, 8, 1000, 50


@pytest.fixture
def one_thread():
    """One thread: the same reduction order, so the same trajectory, on any core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_the_baseline_overfits_short_moments_in_300_frame_recordings(one_thread):
    rng = np.random.default_rng(0)
    windows = []
    for _ in range(QUERIES):
        width = int(rng.integers(1, 5))
        start = int(rng.integers(0, FRAMES - width))
        windows.append([(start, start + width)])
    cfg = small_config()  # the baseline system
    cfg = no_dropout(replace(cfg, backbone=replace(cfg.backbone, hidden_dim=64, heads=4, ffn_dim=256)))
    torch.manual_seed(0)
    batch = make_batch([FRAMES] * QUERIES, windows)
    gt = [{"qid": f"q{i}", "vid": f"v{i}", "duration": FRAMES, "relevant_windows": [list(map(float, w[0]))]}
          for i, w in enumerate(windows)]
    model, criterion = build_model(cfg), build_criterion(cfg)
    optimiser = build_optimizer(list(model.parameters()), 1e-3, 1e-4, torch.device("cpu"))  # the demo's rate

    losses, recall = [], []
    for step in range(1, STEPS + 1):
        model.train()
        loss = weighted_total(criterion(model(batch), batch), criterion.weight_dict)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimiser.step()
        losses.append(loss.item())
        if step % EVERY == 0:
            model.eval()
            with torch.no_grad():
                records, _ = predict_windows(model(batch), batch, cfg)
            recall.append(evaluate_predictions(records, gt)["R1@0.5"])
    assert recall[0] == 0.0  # at first the top-1 windows miss the 1-4-frame moments
    assert min(losses[-EVERY:]) < 0.45 * losses[0]
    assert max(recall) >= 50.0, recall  # half of the moments found by the top-1 window
