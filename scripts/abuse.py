#!/usr/bin/env python3
"""Replays issue 8's resource-exhaustion attacks against a real Berth on 127.0.0.1.

Each attack is bounded in count and time. While it runs, a sampler records the server's RSS,
open descriptors and the latency of normal requests. Standard library only.
"""
import argparse
import asyncio
import base64
import hashlib
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PASSWORD = "abuse-admin-password"


def basic(user, pw):
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


ADMIN = basic("admin", PASSWORD)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def proc_status(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


# Attacks come from 127.0.0.1; the probes (a normal client elsewhere) from 127.0.0.2, so
# per-address limits that stop the attacker do not stop them.
PROBE_SOURCE = ("127.0.0.2", 0)


def raw_request(port, data, timeout=5.0, read=True, source=PROBE_SOURCE):
    """Sends one request on a fresh connection; returns (status, body bytes, seconds)."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=source) as s:
            s.sendall(data)
            if not read:
                return 0, b"", time.monotonic() - start
            chunks = []
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
            resp = b"".join(chunks)
    except OSError:
        return -1, b"", time.monotonic() - start
    head, _, body = resp.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ")[1])
    except (IndexError, ValueError):
        status = -1
    return status, body, time.monotonic() - start


def get(port, path, auth=None, timeout=5.0, source=PROBE_SOURCE):
    h = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n"
    if auth:
        h += f"authorization: {auth}\r\n"
    return raw_request(port, (h + "\r\n").encode(), timeout, source=source)


class Sampler(threading.Thread):
    """Every 100 ms: RSS and descriptors; every 250 ms: latency of /healthz and an authenticated /v2/."""

    def __init__(self, pid, port):
        super().__init__(daemon=True)
        self.pid, self.port = pid, port
        self.stop = threading.Event()
        self.rss, self.fds, self.health, self.v2, self.failures = [], [], [], [], 0

    def run(self):
        n = 0
        while not self.stop.is_set():
            self.rss.append(proc_status(self.pid, "VmRSS"))
            self.fds.append(fd_count(self.pid))
            if n % 3 == 0:
                for path, auth, out in (("/healthz", None, self.health), ("/v2/", ADMIN, self.v2)):
                    status, _, secs = get(self.port, path, auth, timeout=10)
                    if status == 200:
                        out.append(secs)
                    else:
                        self.failures += 1
            n += 1
            time.sleep(0.1)

    def result(self):
        def p(v, q):
            if not v:
                return float("nan")
            v = sorted(v)
            return v[min(len(v) - 1, int(q * len(v)))] * 1000
        return {
            "rss_mb": max(self.rss or [0]) / 1e6,
            "fds": max(self.fds or [0]),
            "health_p50": p(self.health, 0.5),
            "health_max": p(self.health, 1.0),
            "v2_p50": p(self.v2, 0.5),
            "v2_max": p(self.v2, 1.0),
            "failed": self.failures,
        }


# ------------------------------------------------------------------------------------ attacks
async def parallel(n, make, limit=None):
    sem = asyncio.Semaphore(limit or n)

    async def one(i):
        async with sem:
            return await make(i)
    return await asyncio.gather(*(one(i) for i in range(n)))


async def http_once(port, data, timeout=30, source=None):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=source), timeout)
        w.write(data)
        await w.drain()
        resp = await asyncio.wait_for(r.read(), timeout)
        w.close()
        return int(resp.split(b" ")[1]) if resp.startswith(b"HTTP/") else -1
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        return -1


def attack_logins(port, ctx):
    """1,000 parallel wrong passwords for admin (argon2 each, before issue 8), from 4 addresses
    (250 each, under the per-address connection limit): exactly 10 per address may be checked."""
    async def main():
        def req(i):
            return (f"GET /service/token?service=berth HTTP/1.1\r\nhost: x\r\nauthorization: {basic('admin', f'wrong-{i}')}\r\n"
                    "connection: close\r\n\r\n").encode()
        return await parallel(1000, lambda i: http_once(port, req(i), source=(f"127.0.0.{10 + i % 4}", 0)))
    statuses = asyncio.run(main())
    return (f"401: {statuses.count(401)} (limit: 4 addresses x 10), 429: {statuses.count(429)}, 503: {statuses.count(503)}, "
            f"other: {len([s for s in statuses if s not in (401, 429, 503)])}")


def attack_audit(port, ctx):
    """60 refused logins whose user name is 300 KB."""
    db = os.path.join(ctx["data"], "berth.db")

    def size():
        return sum(os.path.getsize(db + s) for s in ("", "-wal") if os.path.exists(db + s))
    before = size()
    name = "u" * 300_000
    for _ in range(60):
        get(port, "/service/token", basic(name, "x"), timeout=30, source=None)
    time.sleep(1.5)
    return f"database grew by {(size() - before) / 1e6:.2f} MB"


def attack_bodies(port, ctx):
    """25 admin-API uploads declaring 30 MB, 1 MB sent, held open, without credentials."""
    socks = []
    statuses = []
    for _ in range(25):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /api/v1/apply HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 30000000\r\n\r\n")
        try:
            s.sendall(b"[" + b" " * (1 << 20))
        except OSError:
            pass
        socks.append(s)
    time.sleep(2)
    for s in socks:
        s.settimeout(2)
        try:
            head = s.recv(64)
            statuses.append(int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else -1)
        except (OSError, ValueError, IndexError):
            statuses.append(-1)
        s.close()
    return f"answers: {sorted(set(statuses))} ({statuses.count(401)} of 25 got 401)"


def attack_methods(port, ctx):
    """50,000 requests with random method names, then the size of /metrics."""
    async def conn(k):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for i in range(5000):
            m = "".join(random.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(12))
            w.write(f"{m} /x{i} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            if i % 100 == 99:
                await w.drain()
        w.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        await w.drain()
        await asyncio.wait_for(r.read(), 120)
        w.close()

    async def main():
        await asyncio.gather(*(conn(k) for k in range(10)))
    asyncio.run(main())
    status, body, _ = get(port, "/metrics", ADMIN)
    return f"/metrics is {len(body) / 1e3:.1f} KB (status {status})"


def attack_slow(port, ctx):
    """300 half-sent requests held open, then new clients."""
    socks = []
    for _ in range(300):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            socks.append(s)
        except OSError:
            break
    time.sleep(ctx["hold"])
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    return f"{closed} of {len(socks)} closed by the server after {ctx['hold']} s"


def attack_stalled_uploads(port, ctx):
    """4,300 PATCHes sending 1 byte of a declared 1 MB (from one address), then a normal push."""
    locations = []
    for i in range(4300):
        status, _, _ = (0, b"", 0)
        h = (f"POST /v2/abuse/stall/blobs/uploads/ HTTP/1.1\r\nhost: x\r\nauthorization: {ADMIN}\r\n"
             "content-length: 0\r\nconnection: close\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(h.encode())
            resp = b""
            while b"\r\n\r\n" not in resp:
                c = s.recv(4096)
                if not c:
                    break
                resp += c
        for line in resp.split(b"\r\n"):
            if line.lower().startswith(b"location:"):
                locations.append(line.split(b":", 1)[1].strip().decode())
    socks = []
    for loc in locations:
        path = loc.split("//", 1)[-1]
        path = path[path.index("/"):] if not loc.startswith("/") else loc
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall((f"PATCH {path} HTTP/1.1\r\nhost: x\r\nauthorization: {ADMIN}\r\n"
                       "content-type: application/octet-stream\r\ncontent-length: 1048576\r\n\r\nx").encode())
            socks.append(s)
        except OSError:
            break
    time.sleep(1)
    blob = os.urandom(1 << 20)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    start = time.monotonic()
    status, _, _ = raw_request(port, (f"POST /v2/abuse/ok/blobs/uploads/?digest={digest} HTTP/1.1\r\nhost: x\r\nauthorization: {ADMIN}\r\n"
                                      f"content-length: {len(blob)}\r\nconnection: close\r\n\r\n").encode() + blob, timeout=30)
    push = time.monotonic() - start
    status_login, _, login_secs = get(port, "/service/token?service=berth", ADMIN, timeout=30)
    refused = len(locations) - len(socks)
    still_open = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) != b"":
                still_open += 1
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
    time.sleep(ctx["hold"])
    for s in socks:
        s.close()
    return (f"{still_open} held open by the server (the rest closed: per-address limit); {len(socks)} stalled PATCHes sent ({refused} not connected); a 1 MiB push from another address during the attack: "
            f"{status} in {push * 1000:.0f} ms; a login: {status_login} in {login_secs * 1000:.0f} ms")


def attack_scopes(port, ctx):
    """A token request with as many scopes as fit in a request line (~10,000)."""
    scopes = "".join(f"&scope=repository:r{i}/x:pull" for i in range(10_000))
    start = time.monotonic()
    status, body, _ = get(port, f"/service/token?service=berth{scopes}", ADMIN, timeout=60)
    return f"HTTP {status} in {(time.monotonic() - start) * 1000:.0f} ms, {len(body)} bytes"


def attack_catalog(port, ctx):
    """GET /v2/_catalog without credentials."""
    status, _, _ = get(port, "/v2/_catalog")
    return f"HTTP {status}"


ATTACKS = {
    "logins": attack_logins,
    "audit": attack_audit,
    "bodies": attack_bodies,
    "methods": attack_methods,
    "slow": attack_slow,
    "uploads": attack_stalled_uploads,
    "scopes": attack_scopes,
    "catalog": attack_catalog,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--berth", required=True, help="path to the berth binary")
    ap.add_argument("--hold", type=float, default=15.0, help="seconds slow clients hold their connections (default 15)")
    ap.add_argument("attacks", nargs="*", help=f"attacks to run (default all): {', '.join(ATTACKS)}")
    a = ap.parse_args()
    names = a.attacks or list(ATTACKS)
    for n in names:
        if n not in ATTACKS:
            sys.exit(f"unknown attack {n!r}; choose from {', '.join(ATTACKS)}")
    data = tempfile.mkdtemp(prefix="berth-abuse-")
    port = free_port()
    env = dict(os.environ, BERTH_ADMIN_PASSWORD=PASSWORD, BERTH_LOG_FORMAT="json")
    env = {k: v for k, v in env.items() if not k.startswith("BERTH_") or k in ("BERTH_ADMIN_PASSWORD", "BERTH_LOG_FORMAT")}
    # Short timeouts so a run takes minutes: the defaults are longer (see docs/configuration.md).
    env.update(BERTH_LIMITS__IDLE_TIMEOUT="10s", BERTH_LIMITS__HEADER_READ_TIMEOUT="10s")
    log = open(os.path.join(data, "server.log"), "w")
    srv = subprocess.Popen([a.berth, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data], env=env, stdout=log, stderr=log)
    try:
        for _ in range(200):
            if get(port, "/healthz", timeout=1)[0] == 200:
                break
            time.sleep(0.05)
        else:
            sys.exit(f"berth did not start; see {data}/server.log")
        idle = proc_status(srv.pid, "VmRSS") / 1e6
        print(f"berth pid {srv.pid} on 127.0.0.1:{port}, idle RSS {idle:.1f} MB, data {data}\n")
        print("| attack | outcome | peak RSS | peak fds | /healthz p50 / max | authenticated /v2/ p50 / max | failed probes |")
        print("|---|---|---|---|---|---|---|")
        ctx = {"data": data, "hold": a.hold}
        for n in names:
            s = Sampler(srv.pid, port)
            s.start()
            outcome = ATTACKS[n](port, ctx)
            time.sleep(0.5)
            s.stop.set()
            s.join()
            r = s.result()
            print(f"| {n} | {outcome} | {r['rss_mb']:.0f} MB | {r['fds']} | {r['health_p50']:.1f} / {r['health_max']:.0f} ms "
                  f"| {r['v2_p50']:.1f} / {r['v2_max']:.0f} ms | {r['failed']} |", flush=True)
            if srv.poll() is not None:
                sys.exit(f"berth exited during {n}; see {data}/server.log")
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(20)
        except subprocess.TimeoutExpired:
            srv.kill()


if __name__ == "__main__":
    main()
