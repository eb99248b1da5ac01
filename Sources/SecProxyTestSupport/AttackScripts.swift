/// The Python 3 script (stdlib only) behind `AttackClient` and `MisbehavingBackend`: abusive and hostile clients
/// for the protection tests, and a backend that resets or half-closes on command. Written to a temporary
/// directory at run time.
enum AttackScripts {
    static let attack = #"""
# Hostile and abusive clients (and a misbehaving backend) for secproxy's protection tests. One JSON argument
# selects the mode; the script prints JSON lines on stdout: {"event": ...} progress lines, then one final line
# with "event": "done". stdlib only.
import json, os, select, socket, ssl, struct, sys, threading, time

TCP_INFO_STATES = {1: "established", 7: "closed", 8: "close_wait", 4: "fin_wait1", 5: "fin_wait2"}
LINGER_RESET = struct.pack("ii", 1, 0)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def ms(t0):
    return round((time.monotonic() - t0) * 1000, 1)


def client_hello(server_name=None, max_version=None):
    """The bytes of the first flight of a real TLS client (Python's ssl), never completed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if max_version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    inbio, outbio = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inbio, outbio, server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outbio.read()


def one_byte_records(data):
    """Re-frames the TLS records in `data` so that every record carries one byte of payload."""
    out = bytearray()
    pos = 0
    while pos + 5 <= len(data):
        ctype, version, length = data[pos], data[pos + 1:pos + 3], struct.unpack("!H", data[pos + 3:pos + 5])[0]
        body = data[pos + 5:pos + 5 + length]
        for b in body:
            out += bytes([ctype]) + version + b"\x00\x01" + bytes([b])
        pos += 5 + length
    return bytes(out)


def payload(o):
    if "hex" in o:
        data = bytes.fromhex(o["hex"].replace(" ", ""))
    elif o.get("hello"):
        data = client_hello(o.get("server_name"), o.get("max_version"))
    else:
        data = o.get("text", "").encode()
    if o.get("records1"):
        data = one_byte_records(data)
    if o.get("truncate") is not None:
        data = data[:o["truncate"]]
    return data


def tcp_state(sock):
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        return info[0]
    except OSError:
        return 7


def connect(o, timeout=5):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if o.get("rcvbuf"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, o["rcvbuf"])
    if o.get("source"):
        s.bind((o["source"], 0))
    s.settimeout(timeout)
    s.connect((o.get("host", "127.0.0.1"), o["port"]))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Watched:
    """One connection whose end (FIN or RST from the server) is timed from its connect."""

    def __init__(self, sock, read=True):
        self.sock = sock
        self.t0 = time.monotonic()
        self.read = read
        self.closed_after_ms = None
        self.how = None
        self.received = bytearray()
        self.local_port = sock.getsockname()[1]
        sock.setblocking(False)

    def poll_readable(self):
        """Called when select says readable (read mode)."""
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return
        except (ConnectionResetError, BrokenPipeError):
            self.ended("reset")
            return
        if not chunk:
            self.ended("fin")
        else:
            self.received += chunk

    def poll_state(self):
        """No-read mode: the TCP state says whether the server sent FIN (CLOSE_WAIT) or RST (CLOSE)."""
        state = tcp_state(self.sock)
        if state == 8:
            self.ended("fin")
        elif state == 7:
            self.ended("reset")

    def ended(self, how):
        if self.closed_after_ms is None:
            self.closed_after_ms = ms(self.t0)
            self.how = how

    def report(self):
        return {"local_port": self.local_port, "closed_after_ms": self.closed_after_ms, "how": self.how,
                "bytes_received": len(self.received), "received_hex": self.received[:64].hex()}


def stdin_watcher(flag):
    """Sets `flag` when stdin has a line or ends (the test says: stop holding)."""
    def run():
        try:
            sys.stdin.readline()
        finally:
            flag.set()
    t = threading.Thread(target=run, daemon=True)
    t.start()


def watch(conns, deadline, stop=None, stop_when_all_closed=True):
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            break
        open_conns = [c for c in conns if c.closed_after_ms is None]
        if not open_conns and stop_when_all_closed:
            break
        readers = [c for c in open_conns if c.read]
        if readers:
            r, _, _ = select.select([c.sock for c in readers[:1000]], [], [], 0.01)
            by_sock = {c.sock: c for c in readers}
            for s in r:
                by_sock[s].poll_readable()
        else:
            time.sleep(0.01)
        for c in open_conns:
            if not c.read:
                c.poll_state()


def mode_hold(o):
    """Opens `count` connections (each sends `payload` once, if any) and watches how each ends.

    Ends when all were closed by the server, at `timeout`, or (with `hold`) when stdin has a line/EOF; then closes
    what is left (with RST when `reset`)."""
    t0 = time.monotonic()
    data = payload(o)
    conns, failed, errors = [], 0, []
    for i in range(o.get("count", 1)):
        try:
            s = connect(o)
            if data:
                s.sendall(data)
            conns.append(Watched(s, read=o.get("read", True)))
        except OSError as e:
            failed += 1
            if len(errors) < 5:
                errors.append(str(e))
    emit({"event": "opened", "opened": len(conns), "failed": failed, "errors": errors, "elapsed_ms": ms(t0),
          "local_ports": [c.local_port for c in conns]})
    stop = None
    if o.get("hold"):
        stop = threading.Event()
        stdin_watcher(stop)
    watch(conns, t0 + o.get("timeout", 10), stop, stop_when_all_closed=not o.get("hold"))
    for c in conns:
        if c.closed_after_ms is None and not c.read:
            c.poll_state()
    result = {"event": "done", "opened": len(conns), "failed": failed, "errors": errors,
              "connections": [c.report() for c in conns]}
    for c in conns:
        if o.get("reset"):
            try:
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            except OSError:
                pass
        c.sock.close()
    emit(result)


def mode_send(o):
    """One connection: sends `payload`, `step` bytes every `interval_ms`; then `then`: wait (read until the server
    closes), fin (SHUT_WR, then read until close) or rst (SO_LINGER 0 and close at once)."""
    data = payload(o)
    step = o.get("step") or max(1, len(data))
    interval = o.get("interval_ms", 0) / 1000.0
    s = connect(o)
    c = Watched(s)
    emit({"event": "connected", "local_port": c.local_port})
    deadline = c.t0 + o.get("timeout", 10)
    sent = 0
    next_send = c.t0
    write_error = None
    while sent < len(data) and c.closed_after_ms is None and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_send:
            try:
                sent += s.send(data[sent:sent + step])
            except BlockingIOError:
                pass
            except OSError as e:
                write_error = str(e)
                c.ended("reset")
                break
            next_send += interval
        wait = max(0.0, min(next_send - time.monotonic(), deadline - time.monotonic()))
        r, _, _ = select.select([s], [], [], wait)
        if r:
            c.poll_readable()
    if o.get("wait_response"):
        # Only once the server answered (e.g. its ServerHello): the handshake is then surely under way.
        while not c.received and c.closed_after_ms is None and time.monotonic() < deadline:
            r, _, _ = select.select([s], [], [], 0.01)
            if r:
                c.poll_readable()
    then = o.get("then", "wait")
    if then == "rst":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        s.close()
        emit({"event": "done", "bytes_sent": sent, "total_bytes": len(data), "write_error": write_error,
              **c.report()})
        return
    if then == "fin" and c.closed_after_ms is None:
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    watch([c], deadline)
    s.close()
    emit({"event": "done", "bytes_sent": sent, "total_bytes": len(data), "write_error": write_error, **c.report()})


def mode_burst(o):
    """Opens `count` plain connections back to back (kept open), then checks each: admitted when `text` comes back
    (an echo backend), refused when the server closed it."""
    t0 = time.monotonic()
    conns = []
    for i in range(o.get("count", 1)):
        try:
            conns.append(connect(o))
        except OSError as e:
            conns.append(None)
    opened_ms = ms(t0)
    text = o.get("text", "ping").encode()
    results = []
    for s in conns:
        if s is None:
            results.append("connect_failed")
            continue
        try:
            s.settimeout(o.get("read_timeout", 2))
            s.sendall(text)
            got = b""
            while len(got) < len(text):
                chunk = s.recv(len(text) - len(got))
                if not chunk:
                    break
                got += chunk
            results.append("admitted" if got == text else "closed")
        except (ConnectionResetError, BrokenPipeError):
            results.append("closed")
        except (socket.timeout, TimeoutError):
            results.append("timeout")
    for s in conns:
        if s is not None:
            s.close()
    emit({"event": "done", "opened_ms": opened_ms, "results": results,
          "admitted": results.count("admitted"), "closed": results.count("closed")})


def mode_backend(o):
    """An echo backend on 127.0.0.1 (port 0) that misbehaves on command: a chunk containing RESET makes it close
    that connection with RST; one containing FIN makes it send FIN and close. Prints `accepted` events. With
    `hold_accepts`, its accept queue is kept full (connects hang) until a line arrives on stdin."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", o.get("port", 0)))
    fillers = []
    if o.get("hold_accepts"):
        # A full accept queue: the kernel drops new SYNs, so a connect to us completes only at a SYN
        # retransmission (~1 s) after stdin said "go" (and we started accepting).
        srv.listen(0)
        for _ in range(2):
            f = socket.socket()
            f.setblocking(False)
            try:
                f.connect(("127.0.0.1", srv.getsockname()[1]))
            except BlockingIOError:
                pass
            fillers.append(f)
        # The queue is full once a filler's connect completed (backlog 0 holds one): wait for that, not a guess.
        _, connected, _ = select.select([], fillers, [], 5)
        if not connected:
            emit({"event": "error", "error": "accept queue did not fill"})
    else:
        srv.listen(128)
    emit({"event": "listening", "port": srv.getsockname()[1]})
    if o.get("hold_accepts"):
        sys.stdin.readline()
        emit({"event": "accepting"})

    def serve(c):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                if b"RESET" in d:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                    break
                if b"FIN" in d:
                    c.shutdown(socket.SHUT_WR)
                    break
                c.sendall(d)
        except OSError:
            pass
        c.close()

    n = 0
    while True:
        c, _ = srv.accept()
        n += 1
        emit({"event": "accepted", "count": n})
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def classify(e):
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "eof"
    return "error: %s" % e


def mode_echo(o):
    """A well-behaved client (TLS when `tls`), from `source` if given: connects, handshakes, sends `text` and reads
    it back. With `hold`: then stops reading and only watches (TCP state) for the server's close, until stdin has a
    line/EOF or `timeout`."""
    t0 = time.monotonic()
    res = {"event": "done", "ok": False, "error": None, "local_port": None, "handshake_ms": None, "echo_ms": None,
           "version": None, "closed_after_ms": None, "how": None}
    s = None
    try:
        s = connect(o, timeout=o.get("timeout", 5))
        res["local_port"] = s.getsockname()[1]
        if o.get("tls"):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname=o.get("server_name") or None)
            res["version"] = s.version()
        res["handshake_ms"] = ms(t0)
        text = o.get("text", "ping").encode()
        if text:
            t1 = time.monotonic()
            s.sendall(text)
            got = b""
            while len(got) < len(text):
                chunk = s.recv(len(text) - len(got))
                if not chunk:
                    break
                got += chunk
            res["echo_ms"] = ms(t1)
            if got != text:
                res["error"] = "echo mismatch: %r" % got[:80]
        if res["error"] is None:
            res["ok"] = True
    except Exception as e:
        res["error"] = classify(e)
    if o.get("hold") and res["ok"]:
        emit({"event": "connected", "local_port": res["local_port"], "handshake_ms": res["handshake_ms"]})
        stop = threading.Event()
        stdin_watcher(stop)
        t2 = time.monotonic()
        deadline = t2 + o.get("hold_timeout", 30)
        while time.monotonic() < deadline and not stop.is_set():
            state = tcp_state(s)
            if state in (7, 8):
                res["closed_after_ms"] = ms(t2)
                res["how"] = "fin" if state == 8 else "reset"
                break
            time.sleep(0.01)
    if s is not None:
        s.close()
    emit(res)


def mode_tls_reset(o):
    """`count` clients, one after the other: each completes a TLS handshake, waits a random 0..`max_delay_ms`
    (busy, for sub-millisecond precision), then closes with RST; i.e. goes away while the proxy is still dialling
    its backend. Reports the client ports."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    rng = __import__("random").Random(o.get("seed", 1))
    ports, errors = [], []
    for i in range(o.get("count", 1)):
        try:
            s = connect(o)
            ports.append(s.getsockname()[1])
            s = ctx.wrap_socket(s)
            delay = rng.uniform(0, o.get("max_delay_ms", 3) / 1000.0)
            t = time.monotonic()
            while time.monotonic() - t < delay:
                pass
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            s.close()
        except Exception as e:
            if len(errors) < 5:
                errors.append(classify(e))
    emit({"event": "done", "local_ports": ports, "errors": errors})


if __name__ == "__main__":
    o = json.loads(sys.argv[1])
    {"hold": mode_hold, "send": mode_send, "burst": mode_burst, "backend": mode_backend,
     "echo": mode_echo, "tls_reset": mode_tls_reset}[o["mode"]](o)
"""#
}
