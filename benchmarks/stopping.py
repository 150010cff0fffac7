"""Which epoch each rule picks: validation loss against a caption score, on the stored dev curves.

    python benchmarks/stopping.py [--quick] [--results FILE ...]

quality.py and architectures.py record each run's dev curve: per epoch, its seconds, validation
loss, and greedy BLEU-4 and CIDEr-D on the dev images. For each stored run this prints the epoch
the checkpoint kept (the lowest validation loss, what notebook 04 keeps) and its greedy dev
CIDEr-D, beside the epoch that dev CIDEr-D itself would pick and its score, and the epochs and
seconds the run trained. `--quick` reads the first stored run only. Last line: one JSON object,
`runs` holding one entry per run (configuration and seed), `mean` their means.
"""
import argparse
import json

from shared_data import REPO

RESULTS = [REPO / "benchmarks" / "results" / name
           for name in ("quality-full.json", "architectures-full.json")]


def picks(curve):
    """The epochs validation loss and greedy dev CIDEr-D pick on one curve, with their scores."""
    by_loss = min(curve, key=lambda e: e["val_loss"])
    by_score = max(curve, key=lambda e: e["greedy_cider_d"])
    return {"epochs": len(curve), "seconds": round(sum(e["seconds"] for e in curve)),
            "by_val_loss": {"epoch": by_loss["epoch"], "greedy_cider_d": by_loss["greedy_cider_d"]},
            "by_dev_cider_d": {"epoch": by_score["epoch"],
                               "greedy_cider_d": by_score["greedy_cider_d"]}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first stored run only")
    parser.add_argument("--results", nargs="+", default=[str(p) for p in RESULTS if p.is_file()])
    args = parser.parse_args()
    runs = {}
    for path in args.results:
        for name, seeds in json.loads(open(path).read())["runs"].items():
            for run in seeds:
                if "curve" in run:  # runs stored before the benchmarks kept curves have none
                    runs[f"{name}, seed {run['seed']}"] = picks(run["curve"])
    if args.quick:
        runs = dict(list(runs.items())[:1])
    if not runs:
        parser.error(f"no run with a dev curve in {', '.join(args.results) or 'no file'}")
    mean = {rule: round(sum(r[rule]["greedy_cider_d"] for r in runs.values()) / len(runs), 4)
            for rule in ("by_val_loss", "by_dev_cider_d")}
    print(json.dumps({"runs": runs, "mean_greedy_cider_d": mean}))


if __name__ == "__main__":
    main()
