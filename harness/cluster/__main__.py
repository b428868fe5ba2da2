"""`python -m harness.cluster up|down|load-image|status` (what the Makefile's targets run)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.cluster.cluster import ClusterError, LocalKubeCluster
from harness.cluster.deploy import deploy_ckpt


def _log(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


def _labels(values: list[str]) -> dict[int, dict[str, str]]:
    """`--label 2:nvidia.com/gpu.present=true` -> {2: {"nvidia.com/gpu.present": "true"}}."""
    labels: dict[int, dict[str, str]] = {}
    for value in values:
        index, _, pair = value.partition(":")
        key, _, label_value = pair.partition("=")
        labels.setdefault(int(index), {})[key] = label_value
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.cluster")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the cluster (or reuse the running one)")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--label", action="append", default=[],
                    help="N:KEY=VALUE, a label of node N (repeatable)")
    up.add_argument("--no-deploy", action="store_true", help="do not install ckpt")
    up.add_argument("--images", type=Path, default=None,
                    help="folder with ckpt.tar and ckpt-agent.tar (default: tools/images/build.sh)")
    commands.add_parser("down", help="stop everything and undo every host change")
    load = commands.add_parser("load-image", help="import an OCI archive into every node")
    load.add_argument("archive", type=Path)
    commands.add_parser("status", help="exit 0 if the cluster runs")
    args = parser.parse_args(argv)

    cluster = LocalKubeCluster()
    started = time.monotonic()
    try:
        if args.command == "up":
            cluster.up(nodes=args.nodes, labels=_labels(args.label), log=_log)
            if not args.no_deploy:
                deploy_ckpt(cluster, log=_log, images=args.images)
            _log(f"ready in {time.monotonic() - started:.0f}s")
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "down":
            cluster.down(log=_log)
            _log(f"down in {time.monotonic() - started:.0f}s")
        elif args.command == "load-image":
            nodes = cluster.load_image(args.archive)
            _log(f"loaded {args.archive} into {', '.join(nodes)}")
        elif args.command == "status":
            running = cluster.running()
            print("running" if running else "not running")
            return 0 if running else 1
    except ClusterError as exc:
        _log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
