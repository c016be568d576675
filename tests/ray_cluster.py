"""A Ray cluster on 127.0.0.1 for the Ray engine tests, owned by this process (run as a script by the tests).

Its parent sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (the one setting that keeps every Ray address on loopback),
HOME and RAY_TMPDIR (a short folder of the test's own). The head runs a Ray Client server (for `ray://` addresses)
on a free loopback port. Commands, one a line on stdin: `add_gpu_node` (a second node with one fake GPU),
`remove_gpu_node`, `quit`. Each answer is one stdout line `HGRAY {json}` with the cluster address, the `ray://`
client address, every node's address as the cluster's table has it, and the pids of the Ray processes. The Ray
processes share this process's fate (the kernel ends them if it dies); `quit` removes the nodes one by one. No
`ray stop` (it would end every Ray process on the machine)."""
from __future__ import annotations

import json
import os
import sys
import time


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0", "Ray would advertise the network address"
    from ray.cluster_utils import Cluster

    tmp = os.environ["RAY_TMPDIR"]
    os.makedirs(os.path.join(tmp, "ray"), exist_ok=True)  # Ray writes the current cluster's address there
    client_port = _free_port()
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=2, num_gpus=0, object_store_memory=80 << 20, include_dashboard=False, node_ip_address="127.0.0.1",
        temp_dir=os.path.join(tmp, "s"), ray_client_server_port=client_port))
    gpu_node = None

    def report(**extra) -> None:
        nodes = cluster.global_state.node_table()
        pids = [p.process.pid for node in cluster.list_all_nodes() for infos in node.all_processes.values()
                for p in infos]
        print("HGRAY " + json.dumps(dict(address=cluster.address, client_address=f"ray://127.0.0.1:{client_port}",
                                         pids=pids, nodes=[
            {"address": n["NodeManagerAddress"], "alive": n["Alive"], "resources": n["Resources"]} for n in nodes],
            **extra)), flush=True)

    report()
    for line in sys.stdin:
        command = line.strip()
        if command == "add_gpu_node" and gpu_node is None:
            gpu_node = cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.1")
        elif command == "remove_gpu_node" and gpu_node is not None:
            node_id = gpu_node.node_id
            cluster.remove_node(gpu_node)
            gpu_node = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(  # until the cluster no longer offers its GPU
                    n["NodeID"] == node_id and n["Alive"] for n in cluster.global_state.node_table()):
                time.sleep(0.2)
        elif command == "quit":
            break
        report()
    cluster.shutdown()
    print("HGRAY " + json.dumps({"stopped": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
