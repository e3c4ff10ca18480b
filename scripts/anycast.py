#!/usr/bin/env python3
# Plays the servers and the clients of an anycast service so a test can tell which server answered each flow.
"""anycast.py: the servers and the clients of a test anycast service.

Every server answers with its own name, so a client can tell which server a
flow (a 5-tuple: fixed source address and port) reached:

  serve    UDP "DNS" responder (a datagram in -> the server's name out) and a
           TCP "HTTP" service (one request line in -> the name, or a stream of
           "NAME chunk K" lines), until SIGTERM/SIGINT.
  query    one UDP flow per source port, each asks once (with retries):
           which server answered which flow.
  hold     keeps UDP flows busy for a while: which flows changed server.
  stream   one long TCP connection per source port: which ones were reset.
  connect  one short TCP request from one source port.

Results are one JSON object on stdout (sorted keys); progress and errors go to
stderr. Exit status: 0 when the measurement ran (unanswered or reset flows are
results, not errors), 1 on a run-time error (cannot bind, too many files, bad
address; and for `connect`, any outcome other than "complete"), 2 on bad usage.
Standard library only; Python 3.9 or newer.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import math
import os
import re
import resource
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse

PROG = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "anycast.py"

# Linux values; the socket module has no IP_PKTINFO constant.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)

MAX_CHUNKS = 1_000_000  # one stream never sends more lines than this
REQUEST_LINE_MAX = 4096
CHUNK_RE = re.compile(r"^(.*) chunk (\d+)$")


class Fatal(Exception):
    """An expected run-time error: printed on stderr, exit status 1."""


# --------------------------------------------------------------------------
# argument types


def port_number(text: str) -> int:
    try:
        n = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {n}")
    return n


def port_list(text: str) -> list:
    """'1000', '1000-1999' or '1000,1005-1010' -> sorted distinct ports."""
    ports = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise argparse.ArgumentTypeError(f"empty item in port list {text!r}")
        if "-" in part:
            lo_text, _, hi_text = part.partition("-")
            lo, hi = port_number(lo_text.strip()), port_number(hi_text.strip())
            if lo > hi:
                raise argparse.ArgumentTypeError(f"port range {part!r} runs backwards")
            ports.update(range(lo, hi + 1))
        else:
            ports.add(port_number(part))
    return sorted(ports)


def ip_literal(text: str) -> str:
    """A numeric IPv4 or IPv6 address (an IPv6 one may carry %scope); no names."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a numeric IP address: {text!r}") from None
    return text


def positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return x


def count(text: str) -> int:
    try:
        n = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {n}")
    return n


def server_name(text: str) -> str:
    if not text or "\n" in text or "\r" in text:
        raise argparse.ArgumentTypeError("a server name must be non-empty and on one line")
    return text


# --------------------------------------------------------------------------
# helpers


def log(msg: str) -> None:
    try:
        print(f"{PROG}: {msg}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def emit(obj) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def os_error_text(e: OSError) -> str:
    name = errno.errorcode.get(e.errno, "") if e.errno else ""
    text = e.strerror or str(e) or type(e).__name__
    return f"{name}: {text}" if name else text


def resolve(addr: str, port: int, socktype: int):
    """(family, sockaddr) of a numeric address; handles IPv6 scopes."""
    try:
        infos = socket.getaddrinfo(addr, port, 0, socktype, 0, socket.AI_NUMERICHOST)
    except socket.gaierror as e:
        raise Fatal(f"bad address {addr!r}: {e.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def hostport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def flow_endpoints(dst: str, port: int, src, socktype: int):
    """Family, destination sockaddr and the source address to bind to."""
    family, dst_sa = resolve(dst, port, socktype)
    if src is None:
        src = "0.0.0.0" if family == socket.AF_INET else "::"
    src_family, _ = resolve(src, 0, socktype)
    if src_family != family:
        raise Fatal(f"--src {src} and --dst {dst} are of different address families")
    return family, dst_sa, src


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise Fatal(f"needs {needed} open files but the hard limit (ulimit -Hn) is {hard}; use fewer source ports")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except (ValueError, OSError) as e:
        raise Fatal(f"cannot raise the open-file limit to {needed}: {e}") from None


def chunk_count(seconds: float, interval: float) -> int:
    """Lines a stream of `seconds` at one line per `interval` carries (K*interval < seconds)."""
    if seconds <= 0 or interval <= 0:
        return 0
    return max(0, math.ceil(seconds / interval - 1e-9))


def same_ip(a: str, b) -> bool:
    try:
        return ipaddress.ip_address(a.split("%")[0]) == b
    except ValueError:
        return False


# --------------------------------------------------------------------------
# serve


class Server:
    def __init__(self, name: str, addrs: list, udp_port: int, tcp_port: int, verbose: bool):
        self.name = name
        self.name_bytes = name.encode("utf-8")
        self.addrs = addrs
        self.udp_port = udp_port
        self.tcp_port = tcp_port
        self.verbose = verbose
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.conns: set = set()
        self.loops: list = []  # (loop function, socket)
        self.wake_r, self.wake_w = os.pipe()  # written once on shutdown: wakes every loop

    # -- set-up

    def open(self) -> None:
        try:
            for addr in self.addrs:
                self.loops.append((self.udp_loop, self.open_udp(addr)))
                self.loops.append((self.tcp_loop, self.open_tcp(addr)))
        except Fatal:
            for _, sock in self.loops:
                sock.close()
            raise

    def open_udp(self, addr: str) -> socket.socket:
        family, sa = resolve(addr, self.udp_port, socket.SOCK_DGRAM)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            # A burst of thousands of queries must not overflow the queue.
            for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if opt is None:
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
                    break
                except OSError:
                    continue
            sock.bind(sa)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise Fatal(f"cannot bind UDP {hostport(addr, self.udp_port)}: {os_error_text(e)}") from None
        return sock

    def open_tcp(self, addr: str) -> socket.socket:
        family, sa = resolve(addr, self.tcp_port, socket.SOCK_STREAM)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sa)
            sock.listen(4096)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise Fatal(f"cannot listen on TCP {hostport(addr, self.tcp_port)}: {os_error_text(e)}") from None
        return sock

    # -- UDP

    def udp_loop(self, sock: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        sel.register(self.wake_r, selectors.EVENT_READ)
        try:
            while not self.stop.is_set():
                sel.select()
                while not self.stop.is_set():
                    try:
                        data, anc, _flags, peer = sock.recvmsg(2048, 256)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # e.g. a queued ICMP error; keep serving
                    self.udp_reply(sock, anc, peer)
        finally:
            sel.close()
            sock.close()

    def udp_reply(self, sock: socket.socket, anc, peer) -> None:
        # Answer from the address the query was sent to (the anycast address),
        # not from whatever address the route back to the client prefers.
        cmsg = []
        for level, kind, data in anc:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
                _ifindex, _spec_dst, hdr_dst = struct.unpack("=I4s4s", data[:12])
                dst = ipaddress.IPv4Address(hdr_dst)
                if not (dst.is_multicast or dst == ipaddress.IPv4Address("255.255.255.255")):
                    cmsg = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=I4s4s", 0, hdr_dst, bytes(4)))]
            elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
                hdr_dst, ifindex = struct.unpack("=16sI", data[:20])
                dst6 = ipaddress.IPv6Address(hdr_dst)
                if not dst6.is_multicast:
                    cmsg = [(socket.IPPROTO_IPV6, IPV6_PKTINFO,
                             struct.pack("=16sI", hdr_dst, ifindex if dst6.is_link_local else 0))]
        if self.verbose:
            log(f"udp query from {hostport(peer[0], peer[1])}")
        try:
            try:
                sock.sendmsg([self.name_bytes], cmsg, 0, peer)
            except OSError as e:
                if not cmsg or e.errno not in (errno.EINVAL, errno.EADDRNOTAVAIL):
                    raise
                sock.sendto(self.name_bytes, peer)  # the source address was refused: let the kernel pick
        except OSError as e:
            if self.verbose:
                log(f"udp reply to {hostport(peer[0], peer[1])} failed: {os_error_text(e)}")

    # -- TCP

    def tcp_loop(self, sock: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        sel.register(self.wake_r, selectors.EVENT_READ)
        try:
            while not self.stop.is_set():
                sel.select()
                if self.stop.is_set():
                    break
                try:
                    conn, peer = sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    if self.stop.is_set():
                        break
                    if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        time.sleep(0.1)
                    continue
                t = threading.Thread(target=self.tcp_conn, args=(conn, peer), daemon=True)
                with self.lock:
                    self.conns.add(conn)
                try:
                    t.start()
                except RuntimeError:  # cannot start a thread
                    with self.lock:
                        self.conns.discard(conn)
                    conn.close()
        finally:
            sel.close()
            sock.close()

    def read_line(self, conn: socket.socket, timeout: float):
        """The first line (bytes, without the newline), or None on timeout/EOF/overflow."""
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or len(buf) > REQUEST_LINE_MAX:
                return None
            conn.settimeout(left)
            try:
                data = conn.recv(REQUEST_LINE_MAX)
            except socket.timeout:
                return None
            if not data:
                return None
            buf += data
        return buf.split(b"\n", 1)[0].rstrip(b"\r")

    @staticmethod
    def parse_stream(line):
        """(seconds, interval) for 'GET /stream?seconds=S&interval=I[ HTTP/x]', else None."""
        if line is None:
            return None
        parts = line.decode("utf-8", "replace").split()
        if len(parts) < 2 or parts[0] != "GET":
            return None
        url = urllib.parse.urlsplit(parts[1])
        if url.path != "/stream":
            return None
        q = urllib.parse.parse_qs(url.query)
        try:
            seconds = float(q["seconds"][0])
            interval = float(q["interval"][0])
        except (KeyError, IndexError, ValueError):
            return None
        if not (math.isfinite(seconds) and math.isfinite(interval)) or seconds < 0 or interval <= 0:
            return None
        if chunk_count(seconds, interval) > MAX_CHUNKS:
            return None
        return seconds, interval

    def tcp_conn(self, conn: socket.socket, peer) -> None:
        try:
            line = self.read_line(conn, 5.0)
            params = self.parse_stream(line)
            if self.verbose:
                log(f"tcp {hostport(peer[0], peer[1])}: {line!r}")
            conn.settimeout(10.0)  # a client that stops reading cannot hold us forever
            if params is None:
                conn.sendall(self.name_bytes + b"\n")
            else:
                seconds, interval = params
                start = time.monotonic()
                for k in range(chunk_count(seconds, interval)):
                    delay = start + k * interval - time.monotonic()
                    if delay > 0 and self.stop.wait(delay):
                        return
                    conn.sendall(f"{self.name} chunk {k}\n".encode("utf-8"))
                rest = start + seconds - time.monotonic()
                if rest > 0 and self.stop.wait(rest):
                    return
            # Close politely: FIN first, then drain, so unread client bytes
            # cannot turn our close into a RST.
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(1.0)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and conn.recv(4096):
                pass
        except OSError:
            pass  # reset, broken pipe, timeout: the client went away
        finally:
            with self.lock:
                self.conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    # -- run

    def run(self) -> int:
        sigs = {signal.SIGTERM, signal.SIGINT}
        # Block the signals in every thread; the main thread takes them with sigwait.
        signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        self.open()
        threads = []
        for target, sock in self.loops:
            t = threading.Thread(target=target, args=(sock,), daemon=True)
            t.start()
            threads.append(t)
        emit({
            "name": self.name,
            "pid": os.getpid(),
            "tcp": [hostport(a, self.tcp_port) for a in self.addrs],
            "udp": [hostport(a, self.udp_port) for a in self.addrs],
        })
        log(f"{self.name} serving udp/{self.udp_port} tcp/{self.tcp_port} on {', '.join(self.addrs)}")
        sig = signal.sigwait(sigs)
        log(f"{self.name} got {signal.Signals(sig).name}, closing")
        self.stop.set()
        os.write(self.wake_w, b"x")
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(2.0)
        return 0


def cmd_serve(args) -> int:
    addrs = args.addr or ["0.0.0.0"]
    seen = []
    for a in addrs:
        if a not in seen:
            seen.append(a)
    return Server(args.name, seen, args.udp_port, args.tcp_port, args.verbose).run()


# --------------------------------------------------------------------------
# UDP clients


class UdpFlows:
    """One bound UDP socket per source port, all polled through one selector."""

    def __init__(self, dst: str, port: int, src, sports: list):
        self.family, self.dst_sa, self.src = flow_endpoints(dst, port, src, socket.SOCK_DGRAM)
        self.dst_ip = ipaddress.ip_address(self.dst_sa[0].split("%")[0])
        self.port = port
        raise_fd_limit(len(sports) + 64)
        self.sel = selectors.DefaultSelector()
        self.socks = {}
        self.stray = 0
        self.stray_from = None
        self.send_errors = 0
        self.send_error = None
        try:
            for sp in sports:
                sock = socket.socket(self.family, socket.SOCK_DGRAM)
                self.socks[sp] = sock
                try:
                    sock.setblocking(False)
                    sock.bind(resolve(self.src, sp, socket.SOCK_DGRAM)[1])
                except OSError as e:
                    raise Fatal(f"cannot bind UDP {hostport(self.src, sp)}: {os_error_text(e)}") from None
                self.sel.register(sock, selectors.EVENT_READ, sp)
        except OSError as e:  # socket() itself: out of files or memory
            self.close()
            raise Fatal(f"cannot open UDP sockets: {os_error_text(e)}") from None
        except Fatal:
            self.close()
            raise

    def close(self) -> None:
        self.sel.close()
        for sock in self.socks.values():
            sock.close()

    def send(self, sports, on_reply) -> None:
        for i, sp in enumerate(sports):
            try:
                self.socks[sp].sendto(b"q", self.dst_sa)
            except OSError as e:
                self.send_errors += 1
                self.send_error = self.send_error or os_error_text(e)
            if i % 64 == 63:  # pace the burst: pick up replies as we go
                self.poll(0, on_reply)

    def poll(self, timeout: float, on_reply) -> None:
        for key, _ in self.sel.select(max(0.0, timeout)):
            sp, sock = key.data, key.fileobj
            while True:
                try:
                    data, peer = sock.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                if peer[1] != self.port or not same_ip(peer[0], self.dst_ip):
                    self.stray += 1
                    self.stray_from = self.stray_from or hostport(peer[0], peer[1])
                    continue
                on_reply(sp, data.decode("utf-8", "replace"))

    def report_problems(self) -> None:
        if self.send_errors:
            log(f"{self.send_errors} sends failed, e.g. {self.send_error}")
        if self.stray:
            log(f"ignored {self.stray} replies from an unexpected source, e.g. {self.stray_from} "
                f"(expected {hostport(str(self.dst_ip), self.port)})")


def cmd_query(args) -> int:
    flows = UdpFlows(args.dst, args.port, args.src, args.sports)
    start = time.monotonic()
    try:
        answers = {sp: None for sp in args.sports}
        pending = set(args.sports)

        def on_reply(sp, name):
            if answers[sp] is None:
                answers[sp] = name
            pending.discard(sp)

        for _attempt in range(args.retries + 1):
            if not pending:
                break
            flows.send(sorted(pending), on_reply)
            deadline = time.monotonic() + args.timeout
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                flows.poll(left, on_reply)
    finally:
        flows.close()
    elapsed = time.monotonic() - start
    flows.report_problems()
    split = {}
    for name in answers.values():
        if name is not None:
            split[name] = split.get(name, 0) + 1
    answered = sum(split.values())
    emit({
        "answered": answered,
        "elapsed": round(elapsed, 3),
        "flows": {str(sp): name for sp, name in answers.items()},
        "send_errors": flows.send_errors,
        "split": split,
        "stray": flows.stray,
        "total": len(answers),
    })
    return 0


def cmd_hold(args) -> int:
    flows = UdpFlows(args.dst, args.port, args.src, args.sports)
    seqs = {sp: [] for sp in args.sports}
    replies = {sp: 0 for sp in args.sports}
    sports = list(args.sports)
    this_round = set()  # flows answered since the last round was sent

    def on_reply(sp, name):
        replies[sp] += 1
        this_round.add(sp)
        seq = seqs[sp]
        if not seq or seq[-1] != name:
            seq.append(name)

    rounds = 0
    start = time.monotonic()
    last_round = None
    max_gap = 0.0  # longest time between two rounds: how long flows went without a packet
    try:
        end = start + args.seconds
        next_send = start
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_send:
                this_round.clear()
                if last_round is not None:
                    max_gap = max(max_gap, now - last_round)
                last_round = now
                flows.send(sports, on_reply)
                rounds += 1
                next_send = max(next_send + args.interval, now)  # fell behind: no catch-up burst
                continue
            flows.poll(min(next_send, end) - now, on_reply)
        # Grace period: collect the answers to the last round.
        grace_end = time.monotonic() + 1.0
        while len(this_round) < len(sports):
            left = grace_end - time.monotonic()
            if left <= 0:
                break
            flows.poll(left, on_reply)
    finally:
        flows.close()
    flows.report_problems()
    changed = sorted(sp for sp in sports if len(seqs[sp]) > 1)
    split = {}
    for sp in sports:
        if seqs[sp]:
            split[seqs[sp][-1]] = split.get(seqs[sp][-1], 0) + 1
    emit({
        "changed": changed,
        "elapsed": round(time.monotonic() - start, 3),
        "flows": {str(sp): seqs[sp] for sp in sports},
        "lost": {str(sp): rounds - replies[sp] for sp in sports if replies[sp] < rounds},
        "max_gap": round(max_gap, 3),
        "replies": sum(replies.values()),
        "rounds": rounds,
        "send_errors": flows.send_errors,
        "silent": sorted(sp for sp in sports if not seqs[sp]),
        "split": split,
        "stray": flows.stray,
    })
    return 0


# --------------------------------------------------------------------------
# TCP clients


def tcp_exchange(family: int, src: str, sport: int, dst_sa, request: bytes, timeout: float, on_line) -> dict:
    """Bind (src, sport), connect, send `request`, feed each received line to
    on_line until EOF. Returns {"outcome": ..., "elapsed": s[, "error": text]}.
    Outcomes: "eof" (clean EOF), "reset", "refused", "timeout", "error"."""
    start = time.monotonic()
    deadline = start + timeout
    res = {}
    clean = False
    sock = None

    def left():
        t = deadline - time.monotonic()
        if t <= 0:
            raise socket.timeout("deadline")
        return t

    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(resolve(src, sport, socket.SOCK_STREAM)[1])
        sock.settimeout(left())
        sock.connect(dst_sa)
        sock.settimeout(left())
        sock.sendall(request)
        buf = b""
        while True:
            sock.settimeout(left())
            data = sock.recv(65536)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                on_line(line.rstrip(b"\r").decode("utf-8", "replace"))
        if buf:
            on_line(buf.decode("utf-8", "replace"))
        res["outcome"] = "eof"
        clean = True
    except ConnectionRefusedError:
        res["outcome"] = "refused"
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        res["outcome"] = "reset"
    except socket.timeout:
        res["outcome"] = "timeout"
    except OSError as e:
        if e.errno == errno.ETIMEDOUT:
            res["outcome"] = "timeout"
        else:
            res["outcome"] = "error"
            res["error"] = os_error_text(e)
    finally:
        if sock is not None:
            if not clean:
                # Abort with a RST: no TIME_WAIT is left on our side, so the
                # same source port can be used again at once.
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            try:
                sock.close()
            except OSError:
                pass
    res["elapsed"] = round(time.monotonic() - start, 3)
    return res


def cmd_stream(args) -> int:
    family, dst_sa, src = flow_endpoints(args.dst, args.port, args.src, socket.SOCK_STREAM)
    expected = chunk_count(args.seconds, args.interval)
    if expected > MAX_CHUNKS:
        raise Fatal(f"--seconds/--interval make {expected} chunks per connection; at most {MAX_CHUNKS}")
    raise_fd_limit(len(args.sports) + 64)
    request = f"GET /stream?seconds={args.seconds!r}&interval={args.interval!r}\n".encode()
    timeout = args.seconds + 5.0
    results = {}
    # Connections still waiting for their first line (or their end): when
    # none is left, one progress line on stderr says the streams are running.
    waiting = {"n": len(args.sports)}
    waiting_lock = threading.Lock()

    def answered():
        with waiting_lock:
            waiting["n"] -= 1
            if waiting["n"] == 0:
                log(f"stream: every connection has its first line ({len(args.sports)} connections)")

    def one(sport):
        conn = {"server": None, "chunks": 0}
        if args.times:
            conn["times"] = []
        first = [True]

        def on_line(line):
            if args.times:
                conn["times"].append(round(time.monotonic(), 3))
            m = CHUNK_RE.match(line)
            if conn["server"] is None:
                conn["server"] = m.group(1) if m else line
            if m:
                conn["chunks"] += 1
            if first[0]:
                first[0] = False
                answered()

        try:
            r = tcp_exchange(family, src, sport, dst_sa, request, timeout, on_line)
        except Exception as e:  # never lose a whole run to one connection
            r = {"outcome": "error", "error": f"{type(e).__name__}: {e}", "elapsed": 0.0}
        if r["outcome"] == "eof":
            r["outcome"] = "complete" if conn["chunks"] >= expected else "truncated"
        conn.update(r)
        results[sport] = conn
        if first[0]:
            first[0] = False
            answered()

    threading.stack_size(256 * 1024)
    threads = []
    for sport in args.sports:
        t = threading.Thread(target=one, args=(sport,), daemon=True)
        try:
            t.start()
        except RuntimeError as e:
            results[sport] = {"server": None, "chunks": 0, "outcome": "error",
                              "error": f"cannot start a thread: {e}", "elapsed": 0.0}
            answered()
            continue
        threads.append(t)
    for t in threads:
        t.join()

    counts = {k: 0 for k in ("complete", "truncated", "reset", "refused", "timeout", "error")}
    split = {}
    for r in results.values():
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        if r["server"] is not None:
            split[r["server"]] = split.get(r["server"], 0) + 1
    errors = {}
    for r in results.values():
        if "error" in r:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    for text, n in errors.items():
        log(f"{n} connections failed: {text}")
    out = {
        "connections": {str(sp): results[sp] for sp in args.sports},
        "expected_chunks": expected,
        "split": split,
        "total": len(results),
    }
    out.update(counts)
    emit(out)
    return 0


def cmd_connect(args) -> int:
    family, dst_sa, src = flow_endpoints(args.dst, args.port, args.src, socket.SOCK_STREAM)
    lines = []
    r = tcp_exchange(family, src, args.sport, dst_sa, b"GET /\n", args.timeout, lines.append)
    m = CHUNK_RE.match(lines[0]) if lines else None
    server = (m.group(1) if m else lines[0]) if lines and lines[0] else None
    outcome = r["outcome"]
    if outcome == "eof":
        outcome = "complete" if server is not None else "truncated"
    out = {"elapsed": r["elapsed"], "outcome": outcome, "server": server, "sport": args.sport}
    if "error" in r:
        out["error"] = r["error"]
    emit(out)
    if outcome != "complete":
        log(f"connect {hostport(src, args.sport)} -> {hostport(args.dst, args.port)}: "
            f"{outcome}{': ' + r['error'] if 'error' in r else ''}")
        return 1
    return 0


# --------------------------------------------------------------------------
# command line


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written; shows a default only where there is one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=Formatter,
        description=("Plays the servers and the clients of an anycast service: every server answers "
                     "with its name, so a test can tell which server each flow reached."),
        epilog="""\
examples (run each inside its network namespace, e.g. `ip netns exec NS ...`):
  %(prog)s serve --name server01 &
  %(prog)s query   --dst 10.255.0.1 --sports 20000-21999
  %(prog)s hold    --dst 10.255.0.1 --sports 20000-20099 --seconds 10
  %(prog)s stream  --dst 10.255.0.1 --sports 30000-30049 --seconds 10 --interval 0.1
  %(prog)s connect --dst 10.255.0.1 --sport 31000

source ports: one number, a range A-B (inclusive) or a comma list: 1000,1005-1010.
Prefer ports outside the kernel's ephemeral range (ip_local_port_range, 32768-60999).
Results: one JSON object on stdout. Exit 0 when the run happened, 1 on errors
(and for connect, on any outcome but "complete"), 2 on bad usage.""")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    s = sub.add_parser(
        "serve", formatter_class=Formatter, help="run one server until SIGTERM/SIGINT",
        description="""\
Runs one anycast server until SIGTERM or SIGINT (then exits 0).
UDP: every datagram gets the reply NAME, sent from the address it was sent to.
TCP: reads one request line (5 s timeout). `GET /stream?seconds=S&interval=I`
gets the line "NAME chunk K" every I seconds for S seconds (K from 0), then the
connection closes; any other request gets "NAME" and the connection closes.
Once listening, prints {"name","pid","tcp","udp"} as JSON on stdout.""")
    s.add_argument("--name", required=True, type=server_name, help="the name this server answers with")
    s.add_argument("--addr", action="append", type=ip_literal, metavar="ADDR",
                   help="address to listen on (default 0.0.0.0); repeat for several, e.g. --addr 0.0.0.0 --addr ::")
    s.add_argument("--udp-port", type=port_number, default=53, metavar="PORT", help="UDP port")
    s.add_argument("--tcp-port", type=port_number, default=80, metavar="PORT", help="TCP port")
    s.add_argument("-v", "--verbose", action="store_true", help="log every query and connection on stderr")
    s.set_defaults(func=cmd_serve)

    def flow_args(sp, port, many=True):
        sp.add_argument("--dst", required=True, type=ip_literal, metavar="ADDR", help="the anycast address")
        sp.add_argument("--port", type=port_number, default=port, help="destination port")
        sp.add_argument("--src", type=ip_literal, metavar="ADDR",
                        help="source address to bind (default: any; the kernel picks by route)")
        if many:
            sp.add_argument("--sports", required=True, type=port_list, metavar="PORTS",
                            help="source ports, one flow each: N, A-B or a comma list")
        else:
            sp.add_argument("--sport", required=True, type=port_number, metavar="PORT", help="source port")

    q = sub.add_parser(
        "query", formatter_class=Formatter, help="one UDP question per source port: who answered",
        description="""\
One UDP flow per source port: sends "q", records the server name that answered
(null when no answer after the retries). All flows run at once.
Output: {"flows": {"<sport>": name|null}, "answered": N, "total": M,
"split": {name: count}, "elapsed": s, "send_errors": n, "stray": n}
(stray: replies from a source other than --dst:--port, ignored).""")
    flow_args(q, 53)
    q.add_argument("--timeout", type=positive_float, default=1.0, help="seconds to wait for answers per attempt")
    q.add_argument("--retries", type=count, default=2, help="resends to the flows still unanswered")
    q.set_defaults(func=cmd_query)

    h = sub.add_parser(
        "hold", formatter_class=Formatter, help="keep UDP flows busy: which ones changed server",
        description="""\
Keeps one UDP flow per source port active for --seconds: every --interval each
flow (same socket, same 5-tuple all along) asks again.
Output: {"flows": {"<sport>": [servers in order, consecutive repeats merged]},
"changed": [sports that saw more than one server], "rounds": R,
"lost": {"<sport>": unanswered rounds}, "silent": [never answered],
"split": {last server: count}, "replies": n, "elapsed": s, "send_errors": n, "stray": n}""")
    flow_args(h, 53)
    h.add_argument("--seconds", type=positive_float, required=True, help="how long to keep the flows busy")
    h.add_argument("--interval", type=positive_float, default=0.2, help="seconds between rounds")
    h.set_defaults(func=cmd_hold)

    st = sub.add_parser(
        "stream", formatter_class=Formatter, help="one long TCP stream per source port: which ones were reset",
        description="""\
Opens one TCP connection per source port at once, asks for a stream of
--seconds at one line per --interval, and reads it to the end.
Outcome per connection: "complete" (clean EOF after all the expected chunks),
"truncated" (clean EOF too early: the server closed or was killed),
"reset" (RST: e.g. the flow moved to a server that does not know it),
"refused", "timeout" (nothing ended it within seconds + 5), "error" (see "error").
Once every connection has its first line (or has ended), one progress line
goes to stderr: "stream: every connection has its first line (N connections)".
Output: {"connections": {"<sport>": {"server", "chunks", "outcome", "elapsed"[, "error"][, "times"]}},
"complete": n, "truncated": n, "reset": n, "refused": n, "timeout": n, "error": n,
"expected_chunks": n, "split": {server: count}, "total": n}
(times, with --times: when each line arrived, in seconds of the system-wide
monotonic clock, CLOCK_MONOTONIC, which other processes can compare with).""")
    flow_args(st, 80)
    st.add_argument("--seconds", type=positive_float, required=True, help="length of each stream")
    st.add_argument("--interval", type=positive_float, default=0.1, help="seconds between lines")
    st.add_argument("--times", action="store_true",
                    help="record when each line arrived (CLOCK_MONOTONIC seconds) per connection")
    st.set_defaults(func=cmd_stream)

    c = sub.add_parser(
        "connect", formatter_class=Formatter, help="one short TCP request from one source port",
        description="""\
One TCP connection from --sport, sends `GET /`, reads the server's name.
Output: {"sport": P, "server": name|null, "outcome": ..., "elapsed": s[, "error": text]}
(outcomes as for stream). Exit 1 unless the outcome is "complete".""")
    flow_args(c, 80, many=False)
    c.add_argument("--timeout", type=positive_float, default=5.0, help="seconds for the whole exchange")
    c.set_defaults(func=cmd_connect)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Fatal as e:
        log(f"{args.cmd}: {e}")
        return 1
    except KeyboardInterrupt:
        log(f"{args.cmd}: interrupted")
        return 130
    except BrokenPipeError:  # stdout closed early (e.g. piped into head)
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
