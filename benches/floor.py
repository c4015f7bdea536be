#!/usr/bin/env python3
"""Helpers of benches/converged.sh.

floor REPORT.json [RUNS]
    The floor of a vakt run: the commands its JSON report says it ran, each run alone RUNS
    times (default 5) on the same host; prints the sum of their medians in ms and the parts.
    Engine API calls are not commands and are not in the floor, nor is Docker's restart
    (converged.sh times it alone, from the state the first apply restarts it in).
peak ARGV...
    Peak RSS of a process tree: ARGV run 5 times, wait4's ru_maxrss (the largest of the
    process and the children it waited for), min/median/max in KiB.
peak-self ARGV...
    vakt's own peak RSS: ARGV (a vakt check or apply) run 5 times with --format json, the
    report's peak_rss_kib, min/median/max in KiB.
swarm-wait LOG LINE
    The engine's wait for its own new manager inside the last swarm init logged in dockerd's
    LOG after line LINE, in ms: from "Listening for local connections" (the manager's control
    socket is up) to "manager selected by agent" (the node's agent has its manager). swarmkit
    asks the control API's health once at once and then every 500 ms, and the API serves once
    raft has started and leads, a few ms after the socket: a swarm init that loses that race
    waits about 500 ms more, the same whoever sent it.
"""
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time


def alone(command):
    """The command to time alone: vakt tests a candidate nginx configuration in a directory
    of its own that is gone after the run; the live configuration is the same text."""
    argv = shlex.split(command)
    if argv[:2] == ["nginx", "-t"]:
        return ["nginx", "-t", "-q", "-c", "/etc/nginx/nginx.conf"]
    return argv


def floor(report, runs):
    commands = [c for c in json.load(open(report)).get("commands", []) if c != "systemctl restart docker"]
    parts = []
    for c in commands:
        argv = alone(c)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append((time.perf_counter() - start) * 1000)
        parts.append((c, statistics.median(times)))
    total = sum(t for _, t in parts)
    detail = ", ".join(f"{c.split(' -e ')[0]} {t:.1f}" for c, t in parts) or "no command"
    print(f"{total:.1f} ms ({detail})")


def peak(argv):
    peaks = []
    for _ in range(5):
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, _, usage = os.wait4(child.pid, 0)
        child.returncode = 0  # reaped above
        peaks.append(usage.ru_maxrss)
    peaks.sort()
    print(f"min {peaks[0]}, median {statistics.median(peaks):.0f}, max {peaks[-1]} KiB")


def peak_self(argv):
    peaks = []
    for _ in range(5):
        out = subprocess.run(argv + ["--format", "json"], capture_output=True, text=True).stdout
        peaks.append(json.loads(out)["peak_rss_kib"])
    peaks.sort()
    print(f"min {peaks[0]}, median {statistics.median(peaks):.0f}, max {peaks[-1]} KiB")


def swarm_wait(log, line):
    stamp = re.compile(r'time="[0-9-]+T([0-9]+):([0-9]+):([0-9.]+)Z"')
    def at(text):
        h, m, sec = stamp.search(text).groups()
        return (int(h) * 60 + int(m)) * 60 + float(sec)
    up = None
    wait = None
    for text in open(log, errors="replace").read().splitlines()[line:]:
        if "Listening for local connections" in text:
            up = at(text)
        elif "manager selected by agent" in text and up is not None:
            wait = (at(text) - up) * 1000
            up = None
    if wait is None:
        sys.exit(f"no swarm init in {log} after line {line}")
    print(round(wait))


if __name__ == "__main__":
    if sys.argv[1] == "floor":
        floor(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 5)
    elif sys.argv[1] == "swarm-wait":
        swarm_wait(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "peak-self":
        peak_self(sys.argv[2:])
    else:
        peak(sys.argv[2:])
