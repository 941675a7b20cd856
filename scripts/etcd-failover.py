#!/usr/bin/env python3
"""etcd's figures next to `understudy bench failover`: three etcd members on loopback, a
writer that keeps putting keys, and the leader killed with SIGKILL (or frozen with SIGSTOP
with --pause), round after round. Prints, per round, the time from the kill to the first
acknowledged put that was sent after it, then min/median/max.

    python3 scripts/etcd-failover.py --rounds 10 --heartbeat-ms 50 --election-timeout-ms 250

Needs `etcd` on the PATH (Debian: apt-get install etcd-server). Every process it starts is
stopped by its PID at the end; all traffic stays on 127.0.0.1.
"""

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body, timeout):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


class Cluster:
    def __init__(self, root, heartbeat, election):
        self.root = root
        self.members = []
        for n in range(3):
            self.members.append(
                {"name": f"m{n}", "client": free_port(), "peer": free_port(), "proc": None}
            )
        self.initial = ",".join(
            f"{m['name']}=http://127.0.0.1:{m['peer']}" for m in self.members
        )
        self.heartbeat, self.election = heartbeat, election

    def start(self, i, state="new"):
        m = self.members[i]
        log = open(os.path.join(self.root, f"{m['name']}.log"), "a")
        m["proc"] = subprocess.Popen(
            [
                "etcd",
                "--name", m["name"],
                "--data-dir", os.path.join(self.root, m["name"]),
                "--listen-client-urls", f"http://127.0.0.1:{m['client']}",
                "--advertise-client-urls", f"http://127.0.0.1:{m['client']}",
                "--listen-peer-urls", f"http://127.0.0.1:{m['peer']}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{m['peer']}",
                "--initial-cluster", self.initial,
                "--initial-cluster-state", state,
                "--heartbeat-interval", str(self.heartbeat),
                "--election-timeout", str(self.election),
            ],
            stdout=log,
            stderr=log,
        )

    def leader(self):
        """The index of the member that says it is the leader, or None."""
        for i, m in enumerate(self.members):
            if m["proc"] is None:
                continue
            try:
                status = post(m["client"], "/v3/maintenance/status", {}, 0.5)
            except Exception:
                continue
            if status.get("leader") and status.get("leader") == status.get("header", {}).get("member_id"):
                return i
        return None

    def stop_all(self):
        for m in self.members:
            if m["proc"] is not None:
                m["proc"].send_signal(signal.SIGCONT)
                m["proc"].kill()
                m["proc"].wait()
                m["proc"] = None


# A put that takes longer is given up and sent to the next member: a follower that forwards
# to a dead leader would otherwise hold it for etcd's own request timeout.
PUT_TIMEOUT = 0.1


def writer(cluster, acks, stop):
    """Puts keys until `stop`, at most 10 minutes; records (sent, acknowledged) times."""
    target, n = 0, 0
    deadline = time.monotonic() + 600
    while not stop.is_set() and time.monotonic() < deadline:
        m = cluster.members[target]
        key = base64.b64encode(f"key-{n}".encode()).decode()
        sent = time.monotonic()
        try:
            post(m["client"], "/v3/kv/put", {"key": key, "value": key}, PUT_TIMEOUT)
            acks.append((sent, time.monotonic()))
            n += 1
        except Exception:
            target = (target + 1) % len(cluster.members)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--heartbeat-ms", type=int, default=50)
    parser.add_argument("--election-timeout-ms", type=int, default=250)
    parser.add_argument("--pause", action="store_true", help="SIGSTOP the leader instead")
    args = parser.parse_args()
    if shutil.which("etcd") is None:
        raise SystemExit("etcd is not installed (apt-get install etcd-server)")
    root = tempfile.mkdtemp(prefix="etcd-failover-")
    cluster = Cluster(root, args.heartbeat_ms, args.election_timeout_ms)
    acks, stop = [], threading.Event()
    try:
        for i in range(3):
            cluster.start(i)
        deadline = time.monotonic() + 30
        while cluster.leader() is None:
            if time.monotonic() > deadline:
                raise SystemExit("no leader")
            time.sleep(0.05)
        thread = threading.Thread(target=writer, args=(cluster, acks, stop), daemon=True)
        thread.start()
        mode = "SIGSTOP" if args.pause else "SIGKILL"
        print(f"etcd failover ({mode}): 3 members, heartbeat {args.heartbeat_ms} ms, "
              f"election timeout {args.election_timeout_ms} ms, {args.rounds} rounds")
        times = []
        for round in range(1, args.rounds + 1):
            time.sleep(1.0)
            leader = None
            deadline = time.monotonic() + 30
            while leader is None and time.monotonic() < deadline:
                leader = cluster.leader()
                time.sleep(0.02)
            if leader is None:
                raise SystemExit("no leader")
            proc = cluster.members[leader]["proc"]
            killed = time.monotonic()
            if args.pause:
                proc.send_signal(signal.SIGSTOP)
            else:
                proc.kill()
                proc.wait()
            first = None
            deadline = time.monotonic() + 30
            while first is None and time.monotonic() < deadline:
                after = [ack for sent, ack in list(acks) if sent > killed]
                first = min(after) if after else None
                time.sleep(0.005)
            if first is None:
                raise SystemExit("no write acknowledged after the kill")
            took = (first - killed) * 1000
            times.append(took)
            print(f"{round:>5}  first write after {took:7.1f} ms")
            if args.pause:
                proc.send_signal(signal.SIGCONT)
            else:
                cluster.members[leader]["proc"] = None
                cluster.start(leader, state="existing")
        times.sort()
        print(f"first write: min {times[0]:.1f} ms   median {statistics.median(times):.1f} ms   "
              f"max {times[-1]:.1f} ms   ({len(times)} rounds)")
    finally:
        stop.set()
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
