extension PythonScripts {
    /// The loopback stress of the data path: a backend and many clients in one process, every byte of
    /// both directions checked by hash. See `StressRun`.
    static let stress = #"""
        # Data-path stress (stdlib only). Starts a backend on 127.0.0.1:0 and prints {"backend_port": P}; reads one JSON
        # line from stdin with the listeners to use ({"targets": [{"name", "port", "tls", "server_name", "cafile"}]});
        # then runs `transfers` transfers, `concurrency` at a time. In each, client and backend send their own seeded
        # random payload at the same time, each half-closes (FIN, TLS: close_notify + FIN) a random delay after its last
        # byte, each reads at a random pace, and each checks by SHA-256 that it received exactly what the other sent.
        # Prints one JSON line per transfer and a summary line {"summary": ...}.
        import hashlib, json, math, random, selectors, socket, ssl, struct, sys, time

        CHUNK = 65536
        MIB = 1 << 20


        class Payload:
            """A seeded random byte stream of `size` bytes (after an optional header), produced on demand."""

            def __init__(self, seed, size, header=b""):
                self.rng = random.Random(seed)
                self.header = header
                self.total = len(header) + size
                self.produced = 0
                self.hash = hashlib.sha256()

            def take(self, n):
                n = min(n, self.total - self.produced)
                if n <= 0:
                    return b""
                out = bytearray()
                if self.produced < len(self.header):
                    part = self.header[self.produced:self.produced + n]
                    out += part
                if len(out) < n:
                    out += self.rng.randbytes(n - len(out))
                self.produced += n
                self.hash.update(out)
                return bytes(out)


        class Endpoint:
            """One side of a transfer on a non-blocking socket; TLS through ssl.MemoryBIO when `tls_obj` is set."""

            def __init__(self, loop, sock, role, tls_obj=None):
                self.loop, self.sock, self.role = loop, sock, role
                self.tls = tls_obj
                self.inbio = self.outbio = None
                if tls_obj is not None:
                    self.tls, self.inbio, self.outbio = tls_obj
                self.handshaken = self.tls is None
                self.payload = None          # set once known (the backend learns it from the header)
                self.fin_delay = 0.0
                self.pace = 0.0              # seconds to pause after each read
                self.raw_out = bytearray()
                self.send_done_at = None
                self.close_notify = False
                self.fin_sent = False
                self.eof = None              # "fin" | "close_notify" | "reset" | "error"
                self.received = 0
                self.rhash = hashlib.sha256()
                self.next_read = 0.0
                self.closed = False
                self.error = None
                self.head = bytearray()      # backend: the transfer id header being read
                self.on_header = None
                self.mask = 0
                loop.sel.register(sock, selectors.EVENT_READ, self)
                self.mask = selectors.EVENT_READ

            def consume(self, data):
                if self.on_header is not None:
                    need = 8 - len(self.head)
                    self.head += data[:need]
                    if len(self.head) == 8:
                        callback, self.on_header = self.on_header, None
                        callback(bytes(self.head))
                self.rhash.update(data)
                self.received += len(data)

            def step(self, now):
                """Makes progress without blocking; returns the next time it wants to be woken, or None."""
                if self.closed:
                    return None
                wake = None
                if not self.handshaken:
                    try:
                        self.tls.do_handshake()
                        self.handshaken = True
                        self.drain_tls(more=True)
                    except ssl.SSLWantReadError:
                        pass
                    except (ssl.SSLError, OSError) as e:
                        self.fail("handshake: %s" % e)
                        return None
                if self.handshaken and self.payload is not None and len(self.raw_out) < 4 * CHUNK:
                    chunk = self.payload.take(CHUNK)
                    if chunk:
                        if self.tls is not None:
                            self.tls.write(chunk)
                        else:
                            self.raw_out += chunk
                    elif self.send_done_at is None:
                        self.send_done_at = now
                if self.send_done_at is not None and not self.fin_sent:
                    if now >= self.send_done_at + self.fin_delay:
                        if self.tls is not None and not self.close_notify:
                            try:
                                self.tls.unwrap()
                            except (ssl.SSLWantReadError, ssl.SSLError):
                                pass
                            self.close_notify = True
                        if self.tls is not None:
                            self.raw_out += self.outbio.read()
                        if not self.raw_out:
                            try:
                                self.sock.shutdown(socket.SHUT_WR)
                            except OSError:
                                pass
                            self.fin_sent = True
                    else:
                        wake = self.send_done_at + self.fin_delay
                if self.tls is not None:
                    self.raw_out += self.outbio.read()
                if self.raw_out:
                    try:
                        n = self.sock.send(self.raw_out)
                        del self.raw_out[:n]
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        self.fail("send: %s" % e)
                        return None
                want_read = self.eof is None and now >= self.next_read
                if self.eof is None and not want_read:
                    wake = self.next_read if wake is None else min(wake, self.next_read)
                self.watch((selectors.EVENT_READ if want_read else 0) | (selectors.EVENT_WRITE if self.raw_out else 0))
                if self.eof is not None and self.fin_sent and not self.raw_out:
                    self.close()
                    return None
                if self.payload is not None and self.send_done_at is None and len(self.raw_out) < 4 * CHUNK:
                    wake = now
                return wake

            def readable(self, now):
                try:
                    data = self.sock.recv(CHUNK)
                except BlockingIOError:
                    return
                except ConnectionResetError:
                    self.eof = "reset"
                    return
                except OSError as e:
                    self.fail("recv: %s" % e)
                    return
                if self.pace:
                    self.next_read = now + self.pace
                if self.tls is None:
                    if data:
                        self.consume(data)
                    else:
                        self.eof = "fin"
                    return
                if data:
                    self.inbio.write(data)
                else:
                    self.inbio.write_eof()
                if self.handshaken:
                    self.drain_tls(more=bool(data))

            def drain_tls(self, more):
                """Decrypts what the MemoryBIO holds; `more`: the socket may still deliver bytes."""
                while self.eof is None:
                    try:
                        d = self.tls.read(CHUNK)
                        if not d:
                            self.eof = "close_notify"
                            break
                        self.consume(d)
                    except ssl.SSLWantReadError:
                        if not more:
                            self.eof = "fin"
                        break
                    except ssl.SSLZeroReturnError:
                        self.eof = "close_notify"
                        break
                    except ssl.SSLEOFError:
                        self.eof = "fin"
                        break
                    except ssl.SSLError as e:
                        self.eof = "error"
                        self.fail("read: %s" % e)
                        break

            def watch(self, mask):
                if mask == self.mask or self.closed:
                    return
                if not mask:
                    self.loop.sel.unregister(self.sock)
                elif self.mask:
                    self.loop.sel.modify(self.sock, mask, self)
                else:
                    self.loop.sel.register(self.sock, mask, self)
                self.mask = mask

            def fail(self, message):
                self.error = self.error or message
                self.close()

            def close(self):
                if self.closed:
                    return
                self.closed = True
                if self.mask:
                    self.loop.sel.unregister(self.sock)
                    self.mask = 0
                self.sock.close()


        class Loop:
            def __init__(self):
                self.sel = selectors.DefaultSelector()
                # Backend connections accepted whose transfer id is not read yet.
                self.orphans = []


        def plan(rng, index, big_every):
            def size():
                if big_every and index % big_every == big_every - 1 and rng.random() < 0.5:
                    return 32 * MIB
                return max(1, int(math.exp(rng.uniform(0, math.log(8 * MIB)))))
            slow = rng.random() < 0.25
            return {
                "id": index,
                "c2b": size(),
                "b2c": size(),
                "client_fin_delay": rng.choice([0.0, 0.0, rng.uniform(0, 0.05)]),
                "backend_fin_delay": rng.choice([0.0, 0.0, rng.uniform(0, 0.05)]),
                "client_pace": rng.uniform(0.0005, 0.003) if slow and rng.random() < 0.5 else 0.0,
                "backend_pace": rng.uniform(0.0005, 0.003) if slow and rng.random() < 0.5 else 0.0,
                "seed_c2b": rng.getrandbits(64),
                "seed_b2c": rng.getrandbits(64),
            }


        def main():
            options = json.loads(sys.argv[1])
            seed = options["seed"]
            rng = random.Random(seed)
            transfers = options.get("transfers", 40)
            concurrency = options.get("concurrency", 8)
            deadline = time.monotonic() + options.get("timeout", 300)
            plans = [plan(rng, i, options.get("big_every", 10)) for i in range(transfers)]
            by_id = {p["id"]: p for p in plans}

            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(256)
            listener.setblocking(False)
            print(json.dumps({"backend_port": listener.getsockname()[1]}), flush=True)
            targets = json.loads(sys.stdin.readline())["targets"]
            contexts = {}
            for t in targets:
                if t.get("tls"):
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    ctx.load_verify_locations(t["cafile"])
                    contexts[t["name"]] = ctx

            loop = Loop()
            loop.sel.register(listener, selectors.EVENT_READ, None)
            live = []        # (plan, client endpoint, backend endpoint or None)
            results = []
            pending = list(plans)
            started = 0

            def attach_backend(sock):
                sock.setblocking(False)
                backend = Endpoint(loop, sock, "backend")

                def known(header):
                    (ident,) = struct.unpack(">Q", header)
                    p = by_id.get(ident)
                    if p is None:
                        backend.fail("unknown transfer id %r" % header)
                        return
                    backend.payload = Payload(p["seed_b2c"], p["b2c"])
                    backend.fin_delay = p["backend_fin_delay"]
                    backend.pace = p["backend_pace"]
                    p["backend"] = backend

                backend.on_header = known
                return backend

            def start(p):
                t = targets[p["id"] % len(targets)]
                p["target"] = t["name"]
                sock = socket.create_connection(("127.0.0.1", t["port"]), timeout=10)
                sock.setblocking(False)
                tls = None
                if t.get("tls"):
                    inbio, outbio = ssl.MemoryBIO(), ssl.MemoryBIO()
                    tls = (contexts[t["name"]].wrap_bio(inbio, outbio, server_hostname=t["server_name"]), inbio, outbio)
                client = Endpoint(loop, sock, "client", tls)
                client.payload = Payload(p["seed_c2b"], p["c2b"], header=struct.pack(">Q", p["id"]))
                client.fin_delay = p["client_fin_delay"]
                client.pace = p["client_pace"]
                p["client"] = client
                p["local_port"] = sock.getsockname()[1]
                p["started"] = time.monotonic()
                live.append(p)

            while pending or live:
                now = time.monotonic()
                if now > deadline:
                    for p in live:
                        p["timeout"] = True
                    break
                while pending and len(live) < concurrency:
                    start(pending.pop(0))
                wake = now + 0.05
                endpoints = []
                for p in live:
                    endpoints.append(p["client"])
                    if p.get("backend") is not None:
                        endpoints.append(p["backend"])
                endpoints.extend(loop.orphans)
                for e in endpoints:
                    w = e.step(now)
                    if w is not None:
                        wake = min(wake, w)
                for key, _ in loop.sel.select(max(0.0, wake - time.monotonic())):
                    if key.data is None:
                        try:
                            sock, _ = listener.accept()
                        except BlockingIOError:
                            continue
                        loop.orphans.append(attach_backend(sock))
                    else:
                        key.data.readable(time.monotonic())
                loop.orphans = [b for b in loop.orphans if b.payload is None and not b.closed]
                for p in list(live):
                    c, b = p["client"], p.get("backend")
                    if c.closed and (b is None or b.closed):
                        live.remove(p)
                        results.append(finish(p))
                        print(json.dumps(results[-1]), flush=True)

            for p in live:
                results.append(finish(p))
                print(json.dumps(results[-1]), flush=True)
            checked = sum(r["c2b_received"] + r["b2c_received"] for r in results)
            expected = sum(r["c2b_sent"] + r["b2c_sent"] for r in results)
            failures = [r for r in results if not r["ok"]]
            print(json.dumps({"summary": {
                "seed": seed, "transfers": len(results), "planned": transfers, "bytes_checked": checked,
                "bytes_expected": expected, "bytes_lost": max(0, expected - checked), "failures": len(failures),
                "elapsed_s": round(time.monotonic() - (deadline - options.get("timeout", 300)), 1)}}), flush=True)


        def finish(p):
            c, b = p["client"], p.get("backend")
            r = {"id": p["id"], "target": p.get("target"), "local_port": p.get("local_port"), "c2b_planned": p["c2b"],
                 "b2c_planned": p["b2c"], "client_fin_delay": round(p["client_fin_delay"], 4),
                 "backend_fin_delay": round(p["backend_fin_delay"], 4), "client_pace": round(p["client_pace"], 4),
                 "backend_pace": round(p["backend_pace"], 4), "timeout": p.get("timeout", False)}
            r["c2b_sent"] = c.payload.total
            r["c2b_received"] = b.received if b else 0
            r["b2c_sent"] = b.payload.total if b and b.payload else p["b2c"]
            r["b2c_received"] = c.received
            r["client_eof"], r["backend_eof"] = c.eof, (b.eof if b else None)
            r["errors"] = [e for e in (c.error, b.error if b else "no backend connection") if e]
            r["ok"] = (not r["timeout"] and not r["errors"] and b is not None
                       and c.payload.produced == c.payload.total and b.payload.produced == b.payload.total
                       and b.received == c.payload.total and c.received == b.payload.total
                       and b.rhash.hexdigest() == c.payload.hash.hexdigest()
                       and c.rhash.hexdigest() == b.payload.hash.hexdigest())
            return r


        if __name__ == "__main__":
            main()
        """#
}
