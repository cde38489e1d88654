"""Federated runs with faulty clients, on the configs of ``lit-meta federate`` (issue 13).

Faults (``--fault``), injected around every node's real ``ClientApp`` (the server sees only what a
real faulty SuperNode would send):
    - ``alternate``: training client ``--client`` raises in odd rounds and hangs past the round
      timeout in even ones, by a second, so that it is free again for the next round (it fails
      every round). The round timeout bounds a round's whole exchange: give the run
      ``--client_workers`` >= the clients sampled a round, so that the others run beside the hanging
      one (with one worker, the messages after it come past the deadline and get no call);
    - ``scaled``: training client ``--client`` sends ``global + scale * (its update)`` (a client
      whose update is 10x too large, or a crude attack).

Example (FedAvg, FedMedian and trimmed mean against a client scaled by 10):
    python benchmarks/federated_faults.py --fault scaled --scale 10 -- \\
        --config configs/federated/omniglot/base.yaml --config configs/federated/omniglot/protonet.yaml \\
        --strategy flwr.serverapp.strategy.FedMedian --version scaled_median

Everything after ``--`` is a ``lit-meta federate`` command line; results land where it says
(``federated_result.json``).
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flwr.app import Array, ArrayRecord, Message, RecordDict  # noqa: E402

from lit_meta.federated.cli import parse  # noqa: E402


def faulty(fault: str, client: int, scale: float, hang: threading.Event, hang_seconds: float):
    def wrap(app):
        def call(message: Message, context) -> Message:
            if context.node_config["partition-id"] != client or message.metadata.message_type != "train":
                return app(message, context)
            server_round = message.content.config_records["config"]["server-round"]
            if fault == "alternate":
                if server_round % 2:
                    raise RuntimeError(f"injected failure in round {server_round}")
                hang.wait(hang_seconds)  # past the round timeout: the server gets no reply
                raise RuntimeError(f"injected hang in round {server_round}")
            honest = app(message, context)
            sent = message.content.array_records["arrays"]
            replied = honest.content.array_records["arrays"]
            scaled = {k: Array(sent[k].numpy() + scale * (replied[k].numpy() - sent[k].numpy())) for k in replied}
            content = RecordDict({"arrays": ArrayRecord(scaled), "metrics": honest.content.metric_records["metrics"]})
            return Message(content, reply_to=message)

        return call

    return wrap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", choices=("alternate", "scaled"), required=True)
    parser.add_argument("--client", type=int, default=4, help="partition id of the faulty training client")
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("federate", nargs=argparse.REMAINDER, help="-- then a `lit-meta federate` command line")
    options = parser.parse_args()
    args = options.federate[1:] if options.federate[:1] == ["--"] else options.federate
    run, hang = parse(args), threading.Event()
    wrap = faulty(options.fault, options.client, options.scale, hang, run.settings.round_timeout + 1.0)
    try:
        outputs = run.run(wrap_client_app=wrap)
    finally:
        hang.set()  # a call still hanging ends now
    print(f"Written to {outputs.write_result()}")


if __name__ == "__main__":
    main()
