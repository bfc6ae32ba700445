"""`--host-cache` across processes on the simulated accelerator (issue #21).

usage: host_cache_test.py STOWAGE

Each step checks `stowage cache list --json` (key, state, attached pids):
1. A solo run without --host-cache gives the reference output.
2. Four `stowage run --host-cache` at once: outputs identical to the solo
   run, byte for byte; afterwards no segment and no lock file is left.
3. Four `stowage bench --host-cache` at once: while all four are attached,
   the sum of their Pss (/proc/PID/smaps_rollup, the shared segment
   included) is at most 1.1 x the host-tier bytes plus the per-process
   overhead measured from a solo bench without --host-cache (its Pss less
   its own private host-tier copy and its checkpoint pages): a run whose
   processes each held a copy would exceed it by ~2.9 x the host-tier bytes.
4. SIGKILL of one of three attached bench processes: the other two finish
   with exit 0; `cache list` no longer lists the killed pid; a new run
   attaches to the same segment and gives the reference output; after the
   last one leaves, nothing is left.
5. --host-cache=keep leaves a ready segment with no process attached; a
   changed checkpoint builds another segment (same output) and the old one
   is listed stale and dropped by `cache drop --stale`; `cache drop KEY`
   removes the other.
6. Bad usage of `cache` and `--host-cache` exits 2; an unknown key exits 1.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import struct

import numpy as np

STOWAGE = sys.argv[1]
PREFIX = f"hctest{os.getpid()}"
ENV = dict(os.environ, STOWAGE_HOST_CACHE_PREFIX=PREFIX)
LAYERS, HIDDEN = 12, 2048  # 12 x 16 MiB float32
BUDGET = "0=40MiB"


def fail(msg):
    print("FAIL:", msg)
    subprocess.run([STOWAGE, "cache", "drop", "--all"], env=ENV, capture_output=True)
    sys.exit(1)


def write_safetensors(path, tensors):
    header, off, blobs = {}, 0, []
    for name, a in tensors.items():
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def segments():
    r = subprocess.run([STOWAGE, "cache", "list", "--json"], env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"cache list exited {r.returncode}: {r.stderr}")
    return json.loads(r.stdout)["segments"]


def leftovers():
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(PREFIX))


def wait_attached(count, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        s = segments()
        if len(s) == 1 and s[0]["state"] == "ready" and len(s[0]["attached"]) == count:
            return s[0]
        time.sleep(0.02)
    fail(f"expected {count} processes attached, cache list says {segments()}")


def pss_kib(pid, field="Pss"):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    fail(f"no {field} for {pid}")


def run_cmd(tmp, out, cache=True):
    cmd = [STOWAGE, "run", "--device", "sim", "--model", f"{tmp}/m.safetensors", "--input",
           f"{tmp}/x.safetensors", "--output", out, "--max-memory", BUDGET, "--prefetch", "1"]
    return cmd + (["--host-cache"] if cache else [])


def bench_cmd(tmp, iters, cache=True):
    cmd = [STOWAGE, "bench", "--device", "sim", "--model", f"{tmp}/m.safetensors", "--max-memory",
           BUDGET, "--prefetch", "1", "--iters", str(iters), "--warmup", "0", "--no-resident",
           "--json"]
    return cmd + (["--host-cache"] if cache else [])


def main():
    tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    rng = np.random.default_rng(5)
    write_safetensors(f"{tmp}/m.safetensors", {
        f"layers.{i}.weight": rng.standard_normal((HIDDEN, HIDDEN), dtype=np.float32) * 0.02
        for i in range(LAYERS)})
    write_safetensors(f"{tmp}/x.safetensors", {"x": rng.standard_normal((2, HIDDEN), dtype=np.float32)})
    if segments():
        fail(f"segments before the test: {segments()}")

    # 1. The reference.
    subprocess.run(run_cmd(tmp, f"{tmp}/ref.safetensors", cache=False), env=ENV, check=True)
    ref = open(f"{tmp}/ref.safetensors", "rb").read()

    # 2. Four at once, identical outputs; nothing left behind.
    procs = [subprocess.Popen(run_cmd(tmp, f"{tmp}/y{i}.safetensors"), env=ENV) for i in range(4)]
    for p in procs:
        if p.wait() != 0:
            fail(f"run --host-cache exited {p.returncode}")
    for i in range(4):
        if open(f"{tmp}/y{i}.safetensors", "rb").read() != ref:
            fail(f"process {i}'s output differs from the solo run")
    if segments() or leftovers():
        fail(f"left behind after the last run: {segments()} {leftovers()}")
    print("4 concurrent runs: outputs identical to the solo run; nothing left behind")

    # 3. Pss of four attached processes.
    solo = subprocess.Popen(bench_cmd(tmp, 400, cache=False), env=ENV, stdout=subprocess.PIPE)
    time.sleep(1.5)
    solo_pss = pss_kib(solo.pid) * 1024
    solo.kill()
    solo.wait()
    procs = [subprocess.Popen(bench_cmd(tmp, 400), env=ENV, stdout=subprocess.PIPE) for _ in range(4)]
    seg = wait_attached(4)
    host = seg["bytes"]
    attached = sorted(seg["attached"])
    if attached != sorted(p.pid for p in procs):
        fail(f"cache list attached {attached}, the processes are {[p.pid for p in procs]}")
    time.sleep(0.5)
    total = sum(pss_kib(p.pid) * 1024 for p in procs)
    # The solo process holds its own host-tier copy and the checkpoint pages it read.
    overhead = max(0, solo_pss - 2 * host)
    bound = 1.1 * host + 4 * overhead
    print(f"host-tier bytes {host / 2**20:.1f} MiB; solo Pss {solo_pss / 2**20:.1f} MiB; per-process "
          f"overhead {overhead / 2**20:.1f} MiB; 4 processes' Pss {total / 2**20:.1f} MiB; bound "
          f"{bound / 2**20:.1f} MiB; if each held a copy: {(4 * host + 4 * overhead) / 2**20:.1f} MiB")
    if total > bound:
        fail(f"sum of Pss {total} exceeds 1.1 x host {host} + 4 x overhead {overhead}")
    for p in procs:
        p.kill()
        p.wait()
    time.sleep(0.1)
    # Killed: their slots are dead; the segment is listed with none attached, stale.
    s = segments()
    if len(s) != 1 or s[0]["attached"] or s[0]["state"] != "ready":
        fail(f"after SIGKILL of all: {s}")

    # 4. SIGKILL of one of three mid-run (the stale segment above is reused).
    procs = [subprocess.Popen(bench_cmd(tmp, 60), env=ENV, stdout=subprocess.PIPE) for _ in range(3)]
    wait_attached(3)
    victim = procs[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    s = segments()
    if victim.pid in s[0]["attached"] or len(s[0]["attached"]) != 2:
        fail(f"the killed process {victim.pid} is still listed: {s}")
    if subprocess.run(run_cmd(tmp, f"{tmp}/after.safetensors"), env=ENV).returncode != 0:
        fail("a run after the SIGKILL failed")
    if open(f"{tmp}/after.safetensors", "rb").read() != ref:
        fail("a run attached after the SIGKILL gives another output")
    for p in procs[1:]:
        out, _ = p.communicate()
        if p.returncode != 0:
            fail(f"bench exited {p.returncode} after another process was killed")
        if json.loads(out)["host_cache"]["action"] not in ("attached", "built"):
            fail(f"bench's host cache: {out}")
    if segments() or leftovers():
        fail(f"left behind after the last process: {segments()} {leftovers()}")
    print("SIGKILL mid-run: the others finished, the segment stayed usable, nothing left")

    # 5. keep, then drop by key.
    subprocess.run(run_cmd(tmp, f"{tmp}/k.safetensors")[:-1] + ["--host-cache=keep"], env=ENV,
                   check=True)
    s = segments()
    if len(s) != 1 or s[0]["state"] != "ready" or not s[0]["keep"] or s[0]["attached"]:
        fail(f"--host-cache=keep: {s}")
    if s[0]["model"] != os.path.realpath(f"{tmp}/m.safetensors") and s[0]["model"] != f"{tmp}/m.safetensors":
        fail(f"cache list names model {s[0]['model']}")
    # A changed checkpoint never meets its old segment: a new one is built,
    # the output is the new model's, and the old one is stale.
    old_key = s[0]["key"]
    os.utime(f"{tmp}/m.safetensors", ns=(time.time_ns(), time.time_ns() + 10**9))
    subprocess.run(run_cmd(tmp, f"{tmp}/k2.safetensors")[:-1] + ["--host-cache=keep"], env=ENV,
                   check=True)
    s = {x["key"]: x for x in segments()}
    if len(s) != 2 or not s[old_key]["stale"] or any(x["stale"] for k, x in s.items() if k != old_key):
        fail(f"after the checkpoint changed: {list(s.values())}")
    if open(f"{tmp}/k2.safetensors", "rb").read() != ref:
        fail("the rebuilt segment gives another output")
    dropped = subprocess.run([STOWAGE, "cache", "drop", "--stale"], env=ENV, check=True,
                             capture_output=True, text=True).stdout
    if old_key not in dropped or [x["key"] for x in segments()] == [old_key]:
        fail(f"cache drop --stale: {dropped} {segments()}")
    subprocess.run([STOWAGE, "cache", "drop", segments()[0]["key"]], env=ENV, check=True,
                   capture_output=True)
    if segments() or leftovers():
        fail(f"cache drop left {segments()} {leftovers()}")
    print("keep, a changed checkpoint, drop --stale and drop KEY: ok")

    # Bad usage exits 2; an unknown key exits 1 naming it.
    for args, code in [(["cache"], 2), (["cache", "frob"], 2), (["cache", "drop"], 2),
                       (["cache", "drop", "--all", "--stale"], 2),
                       (["cache", "list", "--stale"], 2),
                       (["cache", "drop", "0123456789abcdef"], 1),
                       (run_cmd(tmp, f"{tmp}/z.safetensors")[1:-1] + ["--host-cache=bogus"], 2),
                       (run_cmd(tmp, f"{tmp}/z.safetensors")[1:-1] + ["--host-cache-budget", "1GiB"], 2)]:
        r = subprocess.run([STOWAGE] + args, env=ENV, capture_output=True, text=True)
        if r.returncode != code:
            fail(f"stowage {' '.join(args)}: exit {r.returncode}, expected {code}: {r.stderr}")
        if code == 1 and "0123456789abcdef" not in r.stderr:
            fail(f"cache drop of an unknown key does not name it: {r.stderr}")
    print("bad usage: ok")


if __name__ == "__main__":
    main()
