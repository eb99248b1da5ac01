/// The Python 3 client scripts (stdlib `ssl`, `socket`, `hashlib`, `json` only) that tests run as subprocesses.
/// They are written to a temporary directory at run time; see `PythonClient`.
enum PythonScripts {
    /// One connection: connect, handshake, send a payload while reading, then half-close,
    /// wait for EOF or close; one JSON object on stdout.
    static let transfer = #"""
        # One client connection (plain or TLS over a non-blocking socket with ssl.MemoryBIO): connect, handshake, send a
        # payload while reading, then half-close / wait for EOF / close; prints one JSON object. stdlib only.
        import hashlib, json, os, select, socket, ssl, sys, time

        VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
        PATTERN = bytes(range(251)) * 300


        def make_context(o):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if o.get("cafile"):
                ctx.load_verify_locations(o["cafile"])
                ctx.check_hostname = bool(o.get("server_name")) and o.get("check_hostname", True)
            else:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if o.get("min_version"):
                ctx.minimum_version = VERSIONS[o["min_version"]]
            if o.get("max_version"):
                ctx.maximum_version = VERSIONS[o["max_version"]]
            if o.get("ciphers"):
                ctx.set_ciphers(o["ciphers"])
            if o.get("alpn"):
                ctx.set_alpn_protocols(o["alpn"])
            if o.get("cert"):
                ctx.load_cert_chain(o["cert"], o.get("key"))
            return ctx


        def main():
            # Options: JSON in argv[1], or on the first line of stdin (no size limit).
            o = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.readline())
            res = {"ok": False, "connected": False, "handshake": False, "version": None, "cipher": None, "alpn": None,
                   "bytes_sent": 0, "bytes_received": 0, "sha256_sent": None, "sha256_received": None, "elapsed_ms": 0,
                   "handshake_ms": None, "eof": None, "error": None, "pattern_ok": None, "received_text": None,
                   "eof_after_send_ms": None}
            t0 = time.monotonic()
            deadline = t0 + o.get("timeout", 30)
            if o.get("send_text") is not None:
                data = o["send_text"].encode()
            elif o.get("payload") == "pattern":
                n = o.get("send_size", 0)
                data = (PATTERN * (n // len(PATTERN) + 1))[:n]
            else:
                data = os.urandom(o.get("send_size", 0))
            res["sha256_sent"] = hashlib.sha256(data).hexdigest()
            after = o.get("after_send", "half_close")  # half_close | wait_eof | close
            expect = o.get("expect_bytes")
            try:
                sock = socket.create_connection((o["host"], o["port"]), timeout=max(0.1, deadline - time.monotonic()))
            except OSError as e:
                res["error"] = "connect: %s" % e
                return res
            res["connected"] = True
            res["local_port"] = sock.getsockname()[1]
            sock.setblocking(False)
            obj = None
            inbio = outbio = None
            if o.get("tls"):
                inbio, outbio = ssl.MemoryBIO(), ssl.MemoryBIO()
                obj = make_context(o).wrap_bio(inbio, outbio, server_hostname=o.get("server_name") or None)
            handshake_done = obj is None
            if handshake_done:
                res["handshake_ms"] = 0
            sent = 0
            raw_out = bytearray()
            rhash = hashlib.sha256()
            received = 0
            keep = bytearray()
            keep_limit = o.get("keep_received", 4096)
            pattern_ok = True
            close_notify_queued = False
            fin_sent = False
            read_eof = False
            t_send_done = None
            view = memoryview(data)

            def consume(chunk):
                nonlocal received, pattern_ok
                rhash.update(chunk)
                if len(keep) < keep_limit:
                    keep.extend(chunk[: keep_limit - len(keep)])
                if o.get("check_pattern") and pattern_ok:
                    pos = 0
                    while pos < len(chunk):
                        off = (received + pos) % 251
                        piece = chunk[pos:pos + 65536]
                        if piece != PATTERN[off:off + len(piece)]:
                            pattern_ok = False
                            break
                        pos += len(piece)
                received += len(chunk)

            try:
                while True:
                    now = time.monotonic()
                    if now > deadline:
                        res["error"] = "timeout"
                        break
                    if not handshake_done:
                        try:
                            obj.do_handshake()
                            handshake_done = True
                            res["handshake"] = True
                            res["handshake_ms"] = round((time.monotonic() - t0) * 1000, 1)
                            res["version"] = obj.version()
                            c = obj.cipher()
                            res["cipher"] = c[0] if c else None
                            res["alpn"] = obj.selected_alpn_protocol()
                        except ssl.SSLWantReadError:
                            pass
                        except (ssl.SSLError, OSError) as e:
                            res["error"] = "handshake: %s" % e
                            raw_out += outbio.read()
                            break
                    if handshake_done and sent < len(data) and len(raw_out) < 262144:
                        chunk = view[sent:sent + 65536]
                        if obj is not None:
                            sent += obj.write(chunk)
                        else:
                            raw_out += chunk
                            sent += len(chunk)
                        if sent == len(data):
                            t_send_done = time.monotonic()
                    if handshake_done and sent == len(data) and t_send_done is None:
                        t_send_done = time.monotonic()
                    if (handshake_done and sent == len(data) and after == "half_close" and obj is not None
                            and not close_notify_queued and not read_eof):
                        try:
                            obj.unwrap()
                        except ssl.SSLWantReadError:
                            pass
                        except ssl.SSLError:
                            pass
                        close_notify_queued = True
                    if obj is not None:
                        raw_out += outbio.read()
                    if (handshake_done and sent == len(data) and after == "half_close" and not raw_out and not fin_sent
                            and (obj is None or close_notify_queued)):
                        try:
                            sock.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        fin_sent = True
                    if expect is not None and received >= expect and after == "close":
                        break
                    if read_eof:
                        break
                    wlist = [sock] if raw_out else []
                    r, w, _ = select.select([sock], wlist, [], max(0.0, min(0.05, deadline - time.monotonic())))
                    if w:
                        try:
                            n = sock.send(raw_out)
                            del raw_out[:n]
                        except BlockingIOError:
                            pass
                        except OSError as e:
                            res["write_error"] = str(e)
                            raw_out.clear()
                            sent = len(data)
                    if r:
                        try:
                            chunk = sock.recv(262144)
                        except BlockingIOError:
                            chunk = None
                        except ConnectionResetError:
                            res["eof"] = "reset"
                            read_eof = True
                            chunk = None
                            if obj is not None:
                                inbio.write_eof()
                        if chunk is not None:
                            if chunk == b"":
                                if obj is not None:
                                    inbio.write_eof()
                                else:
                                    read_eof = True
                                    res["eof"] = res["eof"] or "fin"
                            elif obj is not None:
                                inbio.write(chunk)
                            else:
                                consume(chunk)
                    if obj is not None and handshake_done:
                        while True:
                            try:
                                d = obj.read(262144)
                                if not d:
                                    read_eof = True
                                    res["eof"] = res["eof"] or "close_notify"
                                    break
                                consume(d)
                            except ssl.SSLWantReadError:
                                break
                            except ssl.SSLZeroReturnError:
                                read_eof = True
                                res["eof"] = res["eof"] or "close_notify"
                                break
                            except ssl.SSLEOFError:
                                read_eof = True
                                res["eof"] = res["eof"] or "fin"
                                break
                            except ssl.SSLError as e:
                                read_eof = True
                                res["eof"] = res["eof"] or "error"
                                res["error"] = "read: %s" % e
                                break
                    elif obj is not None and read_eof is False and inbio.eof and not handshake_done:
                        pass
                    if read_eof and t_send_done is not None:
                        res["eof_after_send_ms"] = round((time.monotonic() - t_send_done) * 1000, 1)
            finally:
                if o.get("reset"):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
            res["bytes_sent"] = sent
            res["bytes_received"] = received
            res["sha256_received"] = rhash.hexdigest()
            res["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 1)
            res["received_text"] = keep.decode("utf-8", "replace")
            if o.get("check_pattern"):
                res["pattern_ok"] = pattern_ok
            res["ok"] = res["error"] is None
            return res


        if __name__ == "__main__":
            print(json.dumps(main()), flush=True)
        """#

    /// Trickles a TLS ClientHello (or text) a few bytes at a time and reports when and how the
    /// server closed.
    static let trickle = #"""
        # Trickles the bytes of a TLS ClientHello (or given text) to a server, `step` bytes every `interval_ms`, and reports
        # when and how the server closed the connection. Prints one JSON object. stdlib only.
        import json, select, socket, ssl, sys, time

        def main():
            o = json.loads(sys.argv[1])
            res = {"closed": False, "how": None, "closed_after_ms": None, "bytes_sent": 0, "bytes_received": 0,
                   "error": None, "total_bytes": 0}
            if o.get("tls", True):
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                inbio, outbio = ssl.MemoryBIO(), ssl.MemoryBIO()
                obj = ctx.wrap_bio(inbio, outbio, server_hostname=o.get("server_name") or None)
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                data = outbio.read()
            else:
                data = o.get("text", "x" * 100000).encode()
            res["total_bytes"] = len(data)
            step = o.get("step", 1)
            interval = o.get("interval_ms", 100) / 1000.0
            t0 = time.monotonic()
            deadline = t0 + o.get("timeout", 10)
            sock = socket.create_connection((o["host"], o["port"]), timeout=5)
            t0 = time.monotonic()
            sock.setblocking(False)
            sent = 0
            next_send = t0
            try:
                while time.monotonic() < deadline:
                    now = time.monotonic()
                    if sent < len(data) and now >= next_send:
                        try:
                            sent += sock.send(data[sent:sent + step])
                        except (BrokenPipeError, ConnectionResetError):
                            res.update(closed=True, how="reset")
                            break
                        next_send += interval
                    wait = max(0.0, min(next_send - time.monotonic() if sent < len(data) else 0.05,
                                        deadline - time.monotonic()))
                    r, _, _ = select.select([sock], [], [], wait)
                    if r:
                        try:
                            chunk = sock.recv(65536)
                        except ConnectionResetError:
                            res.update(closed=True, how="reset")
                            break
                        if chunk == b"":
                            res.update(closed=True, how="fin")
                            break
                        res["bytes_received"] += len(chunk)
            finally:
                if res["closed"]:
                    res["closed_after_ms"] = round((time.monotonic() - t0) * 1000, 1)
                res["bytes_sent"] = sent
                sock.close()
            return res

        if __name__ == "__main__":
            print(json.dumps(main()), flush=True)
        """#

    /// Interactive: one JSON command per stdin line, one JSON answer per stdout line; holds
    /// connections by id.
    static let driver = #"""
        # Interactive client driver: reads one JSON command per line on stdin, answers one JSON line per command on
        # stdout (with the command's "seq"). Holds any number of plain or TLS connections by id. stdlib only.
        import json, socket, ssl, sys, time

        VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
        conns = {}


        def context(c):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if c.get("cafile"):
                ctx.load_verify_locations(c["cafile"])
                ctx.check_hostname = bool(c.get("server_name"))
            else:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if c.get("min_version"):
                ctx.minimum_version = VERSIONS[c["min_version"]]
            if c.get("max_version"):
                ctx.maximum_version = VERSIONS[c["max_version"]]
            if c.get("alpn"):
                ctx.set_alpn_protocols(c["alpn"])
            if c.get("cert"):
                ctx.load_cert_chain(c["cert"], c.get("key"))
            return ctx


        def classify(e):
            if isinstance(e, (socket.timeout, TimeoutError)):
                return "timeout"
            if isinstance(e, ConnectionRefusedError):
                return "refused"
            if isinstance(e, (ConnectionResetError, BrokenPipeError)):
                return "reset"
            if isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
                return "eof"
            if isinstance(e, ssl.SSLError) and "EOF" in str(e):
                return "eof"
            return "error: %s" % e


        def read_some(s, n, timeout):
            """Reads up to n bytes (n None: until EOF) within timeout; returns (data, eof, how)."""
            deadline = time.monotonic() + timeout
            buf = bytearray()
            while n is None or len(buf) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return bytes(buf), False, "timeout"
                s.settimeout(left)
                try:
                    chunk = s.recv(65536 if n is None else n - len(buf))
                except (socket.timeout, TimeoutError):
                    return bytes(buf), False, "timeout"
                except (ConnectionResetError, BrokenPipeError):
                    return bytes(buf), True, "reset"
                except ssl.SSLError as e:
                    return bytes(buf), True, classify(e)
                if not chunk:
                    return bytes(buf), True, "fin"
                buf += chunk
            return bytes(buf), False, None


        def handle(c):
            op = c["op"]
            r = {"ok": True}
            if op == "open":
                t0 = time.monotonic()
                try:
                    s = socket.create_connection((c.get("host", "127.0.0.1"), c["port"]), timeout=c.get("timeout", 5))
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    r["local_port"] = s.getsockname()[1]
                    if c.get("tls"):
                        s.settimeout(c.get("timeout", 5))
                        s = context(c).wrap_socket(s, server_hostname=c.get("server_name") or None)
                        r["version"] = s.version()
                        r["cipher"] = s.cipher()[0]
                        r["alpn"] = s.selected_alpn_protocol()
                    r["handshake_ms"] = round((time.monotonic() - t0) * 1000, 1)
                    conns[c["id"]] = s
                except Exception as e:
                    r.update(ok=False, error=classify(e), elapsed_ms=round((time.monotonic() - t0) * 1000, 1))
            elif op == "send":
                try:
                    conns[c["id"]].sendall(c["data"].encode())
                except Exception as e:
                    r.update(ok=False, error=classify(e))
            elif op == "recv":
                data, eof, how = read_some(conns[c["id"]], c.get("n"), c.get("timeout", 5))
                r.update(data=data.decode("utf-8", "replace"), bytes=len(data), eof=eof, how=how)
                r["ok"] = how is None or (c.get("n") is None and eof)
            elif op == "echo":
                s = conns[c["id"]]
                try:
                    s.sendall(c["data"].encode())
                    data, eof, how = read_some(s, len(c["data"].encode()), c.get("timeout", 5))
                    r.update(data=data.decode("utf-8", "replace"), eof=eof, how=how, ok=data == c["data"].encode())
                except Exception as e:
                    r.update(ok=False, error=classify(e))
            elif op == "wait_closed":
                t0 = time.monotonic()
                data, eof, how = read_some(conns[c["id"]], None, c.get("timeout", 5))
                r.update(closed=eof, how=how, bytes=len(data), after_ms=round((time.monotonic() - t0) * 1000, 1))
                r["ok"] = eof
            elif op == "shutdown_write":
                s = conns[c["id"]]
                try:
                    if isinstance(s, ssl.SSLSocket):
                        r.update(ok=False, error="shutdown_write is for plain connections")
                    else:
                        s.shutdown(socket.SHUT_WR)
                except Exception as e:
                    r.update(ok=False, error=classify(e))
            elif op == "close":
                s = conns.pop(c["id"], None)
                if s is not None:
                    if c.get("reset"):
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.close()
            elif op == "quit":
                return None
            else:
                r.update(ok=False, error="unknown op %s" % op)
            return r


        def main():
            print(json.dumps({"seq": 0, "op": "hello", "ok": True}), flush=True)
            for line in sys.stdin:
                line = line.strip()
                if not line:
                    continue
                c = json.loads(line)
                try:
                    r = handle(c)
                except Exception as e:
                    r = {"ok": False, "error": "driver: %r" % e}
                if r is None:
                    break
                r["seq"] = c.get("seq")
                r["op"] = c["op"]
                r["id"] = c.get("id")
                print(json.dumps(r), flush=True)
            for s in conns.values():
                s.close()


        if __name__ == "__main__":
            main()
        """#
}
