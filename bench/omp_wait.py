"""OpenMP wait policy under a busy neighbour: bare model forwards with ``OMP_WAIT_POLICY`` unset vs ``PASSIVE``.

When the cores are shared, OpenMP worker threads that spin at barriers burn the
time slices the neighbour (or the other intra-op thread) needs. Each measurement is a
fresh child process (the policy is read once, when the OpenMP runtime starts) that
loads the embedded default model and times ``--forwards`` forward passes of one batch
(``--batch`` posts, ``--image-share`` of them with an image) in the given precision;
optionally ``--neighbours`` busy-loop processes run beside it. Rounds alternate every
(policy, neighbours) combination so machine load hits all alike; medians of the
per-forward medians are reported, with the ratio against "unset, no neighbour" of the
same rounds.

    .venv/bin/python bench/omp_wait.py --rounds 3 --precision fp32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--forwards", type=int, default=8, help="timed forward passes per child (median)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-share", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--neighbours", type=int, default=1, help="busy-loop processes in the loaded runs")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child(args: argparse.Namespace) -> dict:
    import torch

    from clmlf.serving.inference import InferenceItem, Predictor

    torch.set_num_threads(args.threads)
    predictor = Predictor.from_checkpoint(None, device="cpu", batch_size=args.batch, precision=args.precision)
    gen = torch.Generator().manual_seed(0)
    size = predictor.loaded.config.image_size
    every = max(1, round(1 / args.image_share)) if args.image_share > 0 else 0
    items = [InferenceItem(f"the new phone was really great {i} " * (1 + i % 5),
                           image=torch.randn(3, size, size, generator=gen) if every and i % every == 0 else None)
             for i in range(args.batch)]
    predictor.predict(items)
    runs = []
    for _ in range(args.forwards):
        start = time.perf_counter()
        predictor.predict(items)
        runs.append(time.perf_counter() - start)
    return {"seconds": statistics.median(runs)}


def busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    combos = [(policy, n) for n in dict.fromkeys((0, args.neighbours)) for policy in ("unset", "PASSIVE")]
    times: dict[tuple[str, int], list[float]] = {c: [] for c in combos}
    load_start = os.getloadavg()[0]
    for round_no in range(args.rounds):
        for policy, neighbours in combos:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            env["OMP_NUM_THREADS"] = str(args.threads)
            if policy != "unset":
                env["OMP_WAIT_POLICY"] = policy
            hogs = [busy_loop() for _ in range(neighbours)]
            try:
                out = subprocess.run([sys.executable, __file__, "--child", "--forwards", str(args.forwards),
                                      "--batch", str(args.batch), "--image-share", str(args.image_share),
                                      "--threads", str(args.threads), "--precision", args.precision],
                                     capture_output=True, text=True, env=env, check=False)
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
            if out.returncode != 0:
                raise SystemExit(f"child failed: {out.stderr.strip().splitlines()[-1:]}")
            seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
            times[(policy, neighbours)].append(seconds)
            print(f"[omp_wait] round {round_no + 1} policy={policy} neighbours={neighbours}: "
                  f"{1000 * seconds:.0f} ms/batch", file=sys.stderr, flush=True)
    base = statistics.median(times[("unset", 0)])
    print(f"Command: `python bench/omp_wait.py {' '.join(argv or sys.argv[1:])}` "
          f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); 1-min load average at start {load_start:.1f}, "
          f"at end {os.getloadavg()[0]:.1f}\n")
    print(f"Batch of {args.batch} posts ({args.image_share:.0%} with an image), {args.precision}, "
          f"{args.threads} OpenMP threads, median of {args.rounds} rounds x {args.forwards} forwards\n")
    print("| OMP_WAIT_POLICY | busy neighbours | ms/batch | slowdown vs unset, none |")
    print("|---|---:|---:|---:|")
    for policy, neighbours in combos:
        value = statistics.median(times[(policy, neighbours)])
        print(f"| {policy} | {neighbours} | {1000 * value:.0f} | {value / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
