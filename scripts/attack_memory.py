#!/usr/bin/env python3
"""Memory attack on a running `vsrbus node`, run by hand (docs/limits.md, "Memory budgets").

Opens --claims connections to --target that each send one Request header claiming
--claim-size bytes (and then --body bytes of it, or nothing), keeps them open for --hold
seconds, and meanwhile sends legit Requests of --legit-sizes on one more connection to
--legit (default: the target), one at a time. Prints how many attack connections the node
closed, the legit success rate and p99 latency per size, and the node's peak RSS (--pid).

  build/vsrbus node --quic off --tcp 127.0.0.1:8090 & PID=$!
  scripts/attack_memory.py --target 127.0.0.1:8090 --claims 36 --pid $PID
  scripts/attack_memory.py --target 127.0.0.1:8090 --claims 36 --body 64M --pid $PID

For the replica plane, point --target at a backup's replica address and --legit at the
primary's client address: the legit Requests are replicated to the backup as Prepares.
"""
import argparse
import socket
import struct
import threading
import time


def parse_size(text):
    text = text.strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def request_header(size, client, request):
    h = bytearray(256)
    struct.pack_into("<I", h, 48, size)
    h[60] = 5  # Request
    struct.pack_into("<QQ", h, 128, client, 0)
    struct.pack_into("<Q", h, 168, request)
    h[176] = 160  # SendMessages
    struct.pack_into("<Q", h, 184, 1)  # session
    return bytes(h)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="host:port the attack connections go to")
    ap.add_argument("--legit", help="host:port for the legit client (default: --target)")
    ap.add_argument("--claims", type=int, default=36)
    ap.add_argument("--claim-size", default="64M",
                    help="bytes each header claims; a list (64M,1M) is used in turn")
    ap.add_argument("--body", default="0", help="body bytes each attacker sends (e.g. 64M)")
    ap.add_argument("--legit-sizes", default="1M,4M")
    ap.add_argument("--legit-count", type=int, default=20)
    ap.add_argument("--hold", type=float, default=3.0, help="seconds the attack stays open")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per legit Request")
    ap.add_argument("--pid", type=int, help="node pid, for its RSS")
    ap.add_argument("--reopen", action="store_true",
                    help="replace every attack connection the node closes (keeps claiming)")
    a = ap.parse_args()

    claims = [parse_size(x) for x in a.claim_size.split(",")]
    claim = claims[0]
    body = parse_size(a.body)
    legit_addr = addr(a.legit or a.target)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            if a.pid:
                peak[0] = max(peak[0], rss_kib(a.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    base = rss_kib(a.pid) if a.pid else 0

    socks = []
    for i in range(a.claims):
        s = socket.create_connection(addr(a.target))
        s.sendall(request_header(claims[i % len(claims)], 0xBAD, i + 1))
        socks.append(s)

    def pour(s):
        chunk = b"\x5a" * (1 << 20)
        left = body
        try:
            while left > 0 and not stop.is_set():
                n = min(left, len(chunk))
                s.sendall(chunk[:n])
                left -= n
        except OSError:
            pass

    pourers = [threading.Thread(target=pour, args=(s,), daemon=True) for s in socks] if body else []
    for t in pourers:
        t.start()
    reopened = [0]
    closed_total = [0]

    def is_closed(s):
        s.setblocking(False)
        try:
            return s.recv(1) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            s.setblocking(True)

    def reopen():
        while not stop.is_set():
            for i, s in enumerate(socks):
                if is_closed(s):
                    closed_total[0] += 1
                    s.close()
                    try:
                        n = socket.create_connection(addr(a.target))
                        n.sendall(request_header(claims[i % len(claims)], 0xBAD,
                                                 1000 + reopened[0]))
                        socks[i] = n
                        reopened[0] += 1
                    except OSError:
                        pass
            time.sleep(0.01)

    reopener = threading.Thread(target=reopen, daemon=True)
    if a.reopen and not body:
        reopener.start()
    time.sleep(0.5)

    results = {}
    c = socket.create_connection(legit_addr)
    c.settimeout(a.timeout)
    seq = 1
    t_end = time.monotonic() + a.hold
    for size_text in a.legit_sizes.split(","):
        size = parse_size(size_text)
        ok, lat = 0, []
        payload = b"\x33" * (size - 256)
        for _ in range(a.legit_count):
            t0 = time.monotonic()
            try:
                c.sendall(request_header(size, 0x600D, seq) + payload)
                seq += 1
                h = recv_exact(c, 256)
                rsize = struct.unpack_from("<I", h, 48)[0]
                recv_exact(c, rsize - 256)
                if h[60] == 8:
                    ok += 1
                    lat.append(time.monotonic() - t0)
            except (OSError, ConnectionError):
                c.close()
                try:
                    c = socket.create_connection(legit_addr)
                    c.settimeout(a.timeout)
                except OSError:
                    pass
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
        results[size_text] = (ok, a.legit_count, p99)
    time.sleep(max(0.0, t_end - time.monotonic()))

    stop.set()
    if reopener.is_alive():
        reopener.join()
    closed = sum(1 for s in socks if is_closed(s))
    for s in socks:
        s.close()
    c.close()
    print(f"attack: {a.claims} connections claiming {a.claim_size} bytes, {body} body bytes each; "
          f"{closed + closed_total[0]} closed by the node ({reopened[0]} reopened)")
    for k, (ok, n, p99) in results.items():
        print(f"legit {k}: {ok}/{n} served ({100.0 * ok / n:.0f} %), p99 {p99:.1f} ms")
    if a.pid:
        print(f"node RSS: {base / 1024:.0f} MiB before, peak {peak[0] / 1024:.0f} MiB during")


if __name__ == "__main__":
    main()
