"""Time the official metrics on a development-testing-sized input (1,347 queries x 10 windows)."""
import json
import random
import time

from amr.evaluation.metrics import evaluate_predictions


def main() -> None:
    rng = random.Random(0)
    gts, preds = [], []
    for q in range(1347):
        dur = rng.randint(60, 300)
        g = [[s, min(dur, s + rng.randint(1, 40))] for s in sorted(rng.sample(range(dur - 1), rng.randint(1, 6)))]
        gts.append({"qid": f"q{q}", "relevant_windows": g})
        preds.append({"qid": f"q{q}", "pred_relevant_windows": [
            [s, s + rng.randint(1, 60), round(rng.random(), 4)] for s in (rng.randint(0, dur) for _ in range(10))]})
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        evaluate_predictions(preds, gts)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    evaluate_predictions(preds, gts, details=True)
    details_s = time.perf_counter() - t0
    best = min(times)
    print(f"metrics on 1347 queries x 10 windows: {best:.3f} s (best of 5), with --details {details_s:.3f} s")
    print(json.dumps({"metric_s": round(best, 4), "metric_details_s": round(details_s, 4), "queries": 1347}))


if __name__ == "__main__":
    main()
