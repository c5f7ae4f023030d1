#!/usr/bin/env python3
"""Energy per step on the GPU by NVML's cumulative counter, the differential way (issue 16 point 2).

Runs one `hyrt bench` command twice, with SHORT and LONG timed runs (the `{runs}` placeholder in
the command), reads nvmlDeviceGetTotalEnergyConsumption (millijoules since the driver loaded)
around each process, and reports

    J/step = (E(LONG) - E(SHORT)) / (LONG - SHORT)

so load, compile, warm-up and idle tails cancel: what remains is the energy of LONG - SHORT
steady steps. Both processes are otherwise identical. Rounds alternate short and long processes;
the median of the rounds is reported. NVML is opened with ctypes from the driver's
libnvidia-ml.so.1 (no Python package needed).

Usage: nvml_energy.py [--short N] [--long N] [--rounds R] [--gpu I] -- CMD... ({runs} in CMD)
Prints one JSON object.
"""
import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time


class Nvml:
    def __init__(self, index):
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        self._check(self.lib.nvmlInit_v2(), "nvmlInit_v2")
        self.handle = ctypes.c_void_p()
        self._check(
            self.lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(self.handle)),
            "nvmlDeviceGetHandleByIndex_v2")
        name = ctypes.create_string_buffer(96)
        self._check(self.lib.nvmlDeviceGetName(self.handle, name, ctypes.c_uint(96)),
                    "nvmlDeviceGetName")
        self.name = name.value.decode()

    def _check(self, rc, what):
        if rc != 0:
            self.lib.nvmlErrorString.restype = ctypes.c_char_p
            raise RuntimeError(f"{what}: {self.lib.nvmlErrorString(rc).decode()} ({rc})")

    def energy_mj(self):
        mj = ctypes.c_ulonglong()
        self._check(self.lib.nvmlDeviceGetTotalEnergyConsumption(self.handle, ctypes.byref(mj)),
                    "nvmlDeviceGetTotalEnergyConsumption")
        return mj.value


def run(nvml, cmd, runs):
    argv = [a.replace("{runs}", str(runs)) for a in cmd]
    time.sleep(0.5)  # the counter updates every few tens of ms: let the last process's tail land
    e0, t0 = nvml.energy_mj(), time.monotonic()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-400:]}")
    time.sleep(0.5)
    return nvml.energy_mj() - e0, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", type=int, default=20)
    ap.add_argument("--long", type=int, default=220)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not any("{runs}" in c for c in cmd) or a.long <= a.short:
        sys.exit("usage: nvml_energy.py [--short N] [--long N] -- CMD with {runs}")
    nvml = Nvml(a.gpu)
    rounds = []
    for _ in range(a.rounds):
        e_short, s_short = run(nvml, cmd, a.short)
        e_long, s_long = run(nvml, cmd, a.long)
        steps = a.long - a.short
        rounds.append({
            "short_mj": e_short, "long_mj": e_long, "short_s": s_short, "long_s": s_long,
            "joules_per_step": (e_long - e_short) / 1000.0 / steps,
            "seconds_per_step_wall": (s_long - s_short) / steps,
        })
    print(json.dumps({
        "gpu": nvml.name,
        "method": "nvmlDeviceGetTotalEnergyConsumption around two processes that differ only "
                  "in their timed runs; J/step = energy difference / run difference",
        "command": " ".join(cmd), "short_runs": a.short, "long_runs": a.long,
        "joules_per_step_median": statistics.median(r["joules_per_step"] for r in rounds),
        "rounds": rounds,
    }, indent=1))


if __name__ == "__main__":
    main()
