#!/usr/bin/env python3
"""Soak test for secproxy (not part of CI): a TLS listener in front of two echo backends, many concurrent TLS echo
sessions with random sizes (every byte checked), while a chaos loop SIGKILLs and restarts the backends and some
clients reset (SO_LINGER 0) or stall mid-session.

Everything runs on 127.0.0.1; every process started here is stopped here, by PID. Prints a report and exits 1 when
a session was corrupted or hung, or when the proxy's descriptor count did not return to where it started.

    python3 scripts/soak.py --bin .build/release/secproxy [--seconds 60] [--workers 50]

`python3 scripts/soak.py backend PORT` runs one echo backend (used by the soak itself).
"""
import argparse
import asyncio
import hashlib
import os
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

LINGER_RESET = struct.pack("ii", 1, 0)
MAX_SIZE = 4 << 20


# ---------------------------------------------------------------------------------------------------------------
# Echo backend (its own process, so that the chaos loop can SIGKILL it)


def run_backend(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(512)

    def serve(conn):
        try:
            while True:
                data = conn.recv(262144)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class Children:
    """Every process started, stopped by PID at the end (SIGTERM, then SIGKILL)."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kwargs):
        proc = subprocess.Popen(args, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc, sig=signal.SIGTERM, wait=5):
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def stop_all(self):
        for proc in self.procs:
            self.stop(proc)


class Backend:
    """An echo backend process on a fixed port, killed and restarted by the chaos loop."""

    def __init__(self, children, port):
        self.children = children
        self.port = port
        self.proc = None
        self.down_since = None
        self.outages = []  # (start, end) monotonic
        self.kills = 0

    def start(self):
        self.proc = self.children.start([sys.executable, os.path.abspath(__file__), "backend", str(self.port)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                # The port may still be held for a moment: try again.
                self.proc = self.children.start(
                    [sys.executable, os.path.abspath(__file__), "backend", str(self.port)])
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        if self.down_since is not None:
            self.outages.append((self.down_since, time.monotonic()))
            self.down_since = None

    def kill(self):
        self.down_since = time.monotonic()
        self.kills += 1
        self.children.stop(self.proc, signal.SIGKILL)

    def was_down_during(self, start, end):
        spans = list(self.outages)
        if self.down_since is not None:
            spans.append((self.down_since, time.monotonic()))
        return any(s <= end and e >= start for s, e in spans)


# ---------------------------------------------------------------------------------------------------------------
# Sessions


class Stats:
    def __init__(self):
        self.counts = {"ok": 0, "cut_by_fault": 0, "cut_unexplained": 0, "client_reset": 0, "corrupted": 0,
                       "hung": 0, "connect_failed": 0}
        self.bytes_ok = 0
        self.stalls = 0
        self.details = []
        self.sessions_by_port = {}  # client port -> what the session did, to match the proxy's log lines

    def add(self, outcome, detail=None):
        self.counts[outcome] += 1
        if detail and len(self.details) < 20:
            self.details.append("%s: %s" % (outcome, detail))


async def session(args, ctx, backends, stats, rng):
    size = int(round(2 ** rng.uniform(0, 22)))  # 1 B ... 4 MiB, log-uniform
    size = max(1, min(size, MAX_SIZE))
    action = rng.random()
    reset_at = rng.randrange(0, size) if action < 0.05 else None
    stall_at = rng.randrange(0, size) if 0.05 <= action < 0.10 else None
    stall_for = rng.uniform(0.5, 3.0)
    data = os.urandom(size)
    start = time.monotonic()
    progress = [time.monotonic()]
    state = {"sent": 0, "received": 0, "mismatch": None}

    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", args.port, ssl=ctx, server_hostname="localhost"), args.hang)
    except Exception as e:  # noqa: BLE001 - any failure to connect is counted, with its text
        end = time.monotonic()
        if any(b.was_down_during(start - 1, end) for b in backends):
            stats.add("cut_by_fault")
        else:
            stats.add("connect_failed", repr(e))
        return

    async def send():
        view = memoryview(data)
        while state["sent"] < size:
            if stall_at is not None and state["sent"] >= stall_at and not state.get("stalled"):
                state["stalled"] = True
                stats.stalls += 1
                await asyncio.sleep(stall_for)
            if reset_at is not None and state["sent"] >= reset_at:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                writer.transport.abort()
                raise ConnectionAbortedError("client reset (on purpose)")
            chunk = view[state["sent"]:state["sent"] + min(65536, size - state["sent"])]
            writer.write(chunk)
            await writer.drain()
            state["sent"] += len(chunk)
            progress[0] = time.monotonic()

    async def receive():
        while state["received"] < size:
            chunk = await reader.read(262144)
            if not chunk:
                raise EOFError("EOF after %d of %d bytes" % (state["received"], size))
            offset = state["received"]
            if offset + len(chunk) > size or data[offset:offset + len(chunk)] != chunk:
                state["mismatch"] = offset
                raise ValueError("bytes differ at offset %d" % offset)
            state["received"] += len(chunk)
            progress[0] = time.monotonic()

    async def watchdog():
        # No byte moving in either direction for `hang` seconds: the proxy should have closed it (idle_timeout).
        while True:
            await asyncio.sleep(1)
            if time.monotonic() - progress[0] > args.hang:
                raise TimeoutError("no progress for %.0f s" % args.hang)

    local_port = writer.get_extra_info("sockname")[1]
    tasks = [asyncio.ensure_future(send()), asyncio.ensure_future(receive()), asyncio.ensure_future(watchdog())]
    error = None
    try:
        # Done when the whole echo came back (receive ends), or at the first failure of any of the three.
        pending = set(tasks)
        while error is None and not tasks[1].done():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.exception() is not None:
                    error = t.exception()
                    break
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.transport.abort() if error is not None else writer.close()
    end = time.monotonic()
    stats.sessions_by_port[local_port] = "size %d, sent %d, received %d, %s, error %r" % (
        size, state["sent"], state["received"],
        "reset at %d" % reset_at if reset_at is not None else "stalled" if stall_at is not None else "plain", error)

    if state["mismatch"] is not None:
        stats.add("corrupted", "size %d, differs at %d" % (size, state["mismatch"]))
    elif error is None and state["received"] == size:
        stats.add("ok")
        stats.bytes_ok += size
    elif isinstance(error, ConnectionAbortedError) and reset_at is not None:
        stats.add("client_reset")
    elif isinstance(error, TimeoutError):
        stats.add("hung", "size %d, sent %d, received %d: %s" % (size, state["sent"], state["received"], error))
    elif any(b.was_down_during(start, end + 0.5) for b in backends):
        stats.add("cut_by_fault")
    else:
        stats.add("cut_unexplained", "size %d, sent %d, received %d: %r" % (
            size, state["sent"], state["received"], error))


async def worker(args, ctx, backends, stats, stop_at, seed):
    rng = random.Random(seed)
    while time.monotonic() < stop_at:
        await session(args, ctx, backends, stats, rng)


def chaos(backends, stop, rng, log):
    """Every few seconds: SIGKILL one backend, leave it down a moment, restart it on the same port."""
    while not stop.wait(rng.uniform(2.0, 5.0)):
        backend = rng.choice(backends)
        backend.kill()
        if stop.wait(rng.uniform(0.3, 1.5)):
            backend.start()
            break
        backend.start()
        log.append("killed and restarted backend :%d" % backend.port)


# ---------------------------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--hang", type=float, default=25, help="seconds without progress that count as hung")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()

    children = Children()
    work = tempfile.mkdtemp(prefix="secproxy-soak-")

    def on_signal(signum, frame):
        raise SystemExit(130)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    failed = True
    try:
        failed = run(args, children, work)
    finally:
        children.stop_all()
        subprocess.run(["rm", "-rf", work])
    sys.exit(1 if failed else 0)


def run(args, children, work):
    # A throwaway self-signed certificate for localhost.
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(key, 0o600)

    backends = [Backend(children, free_port()), Backend(children, free_port())]
    for backend in backends:
        backend.start()

    config = os.path.join(work, "secproxy.toml")
    with open(config, "w") as f:
        f.write("""[server]
max_connections = 2000
drain_timeout = "2s"
log_level = "info"

[defaults]
handshake_timeout = "5s"
idle_timeout = "10s"
half_close_timeout = "5s"
connect_timeout = "1s"

[[listener]]
name = "soak"
listen = "127.0.0.1:0"
mode = "tls"
backends = [%s]

[listener.tls]
cert = "%s"
key = "%s"
""" % (", ".join('"127.0.0.1:%d"' % b.port for b in backends), cert, key))

    log_path = os.path.join(work, "secproxy.log")
    log_file = open(log_path, "w")
    proxy = children.start([args.bin, "-c", config], stdout=subprocess.DEVNULL, stderr=log_file)
    port = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and port is None:
        if proxy.poll() is not None:
            print("secproxy exited at start (%s):\n%s" % (proxy.returncode, open(log_path).read()))
            return True
        m = re.search(r"msg=listening listener=soak address=127\.0\.0\.1:(\d+)", open(log_path).read())
        if m and "msg=ready" in open(log_path).read():
            port = int(m.group(1))
        else:
            time.sleep(0.05)
    if port is None:
        print("secproxy did not report its port:\n" + open(log_path).read())
        return True
    args.port = port

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cert)

    fds_before, rss_before = fd_count(proxy.pid), rss_kib(proxy.pid)
    print("secproxy pid %d on 127.0.0.1:%d, backends :%d :%d; %d workers for %.0f s (seed %d)" % (
        proxy.pid, port, backends[0].port, backends[1].port, args.workers, args.seconds, args.seed))
    print("before: fds %d, VmRSS %d KiB" % (fds_before, rss_before))

    stats = Stats()
    stop = threading.Event()
    chaos_log = []
    chaos_thread = threading.Thread(
        target=chaos, args=(backends, stop, random.Random(args.seed + 1), chaos_log), daemon=True)
    started = time.monotonic()
    chaos_thread.start()

    rss_peak = [rss_before]

    async def load():
        stop_at = time.monotonic() + args.seconds

        async def sample():
            while time.monotonic() < stop_at + args.hang + 10:
                try:
                    rss_peak[0] = max(rss_peak[0], rss_kib(proxy.pid))
                except OSError:
                    pass
                await asyncio.sleep(0.5)

        sampler = asyncio.ensure_future(sample())
        await asyncio.gather(*(worker(args, ctx, backends, stats, stop_at, args.seed * 1000 + i)
                               for i in range(args.workers)))
        sampler.cancel()

    asyncio.run(load())
    stop.set()
    chaos_thread.join()
    for backend in backends:
        if backend.proc.poll() is not None:
            backend.start()
    load_seconds = time.monotonic() - started

    # Drain: the descriptor count must come back to where it started.
    alive = proxy.poll() is None
    fds_after, rss_after = -1, -1
    if alive:
        deadline = time.monotonic() + 15
        fds_after = fd_count(proxy.pid)
        while fds_after != fds_before and time.monotonic() < deadline:
            time.sleep(0.2)
            fds_after = fd_count(proxy.pid)
        rss_after = rss_kib(proxy.pid)

    children.stop(proxy)
    log_file.close()
    reasons = {}
    lines = 0
    logged_ports = {}
    with open(log_path) as f:
        for line in f:
            if 'msg="connection closed"' in line:
                lines += 1
                m = re.search(r" reason=(\S+)", line)
                reason = m.group(1) if m else "?"
                reasons[reason] = reasons.get(reason, 0) + 1
                m = re.search(r" client=127\.0\.0\.1:(\d+)", line)
                if m:
                    logged_ports[int(m.group(1))] = logged_ports.get(int(m.group(1)), 0) + 1
    # Exactly one line per connection (informational: a client port can be reused over a long run).
    unlogged = [p for p in stats.sessions_by_port if p not in logged_ports]

    c = stats.counts
    sessions = sum(c.values())
    print("load: %.1f s, %d sessions, %.1f MiB echoed intact; %d backend kills (%s); %d stalls" % (
        load_seconds, sessions, stats.bytes_ok / 1048576, sum(b.kills for b in backends),
        ", ".join(":%d x%d" % (b.port, b.kills) for b in backends), stats.stalls))
    print("sessions: ok %d, cut by a fault %d, client resets %d, corrupted %d, hung %d, cut unexplained %d, "
          "connect failed %d" % (c["ok"], c["cut_by_fault"], c["client_reset"], c["corrupted"], c["hung"],
                                 c["cut_unexplained"], c["connect_failed"]))
    print("proxy log: %d connection lines for %d sessions (%d distinct client ports); reasons %s" % (
        lines, sessions, len(stats.sessions_by_port), ", ".join("%s=%d" % kv for kv in sorted(reasons.items()))))
    if unlogged:
        print("  %d connection(s) without a line, e.g.:" % len(unlogged))
        for p in unlogged[:5]:
            print("    client port %d: %s" % (p, stats.sessions_by_port[p]))
    print("after:  fds %d (before %d), VmRSS %d KiB (before %d KiB, peak %d KiB); proxy %s" % (
        fds_after, fds_before, rss_after, rss_before, rss_peak[0], "alive" if alive else "DIED"))
    for detail in stats.details:
        print("  " + detail)
    failed = c["corrupted"] > 0 or c["hung"] > 0 or fds_after != fds_before or not alive
    print("RESULT: %s" % ("FAIL" if failed else "PASS"))
    return failed


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "backend":
        run_backend(int(sys.argv[2]))
    else:
        main()
