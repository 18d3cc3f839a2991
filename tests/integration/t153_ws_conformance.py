#!/usr/bin/python3
"""t153 WebSocket conformance of the helper (cm-ws behind nginx at /ws/), Autobahn style.

No Autobahn suite can run here, so a raw-socket client (plain `socket`, its own RFC 6455
framing and masking) replays the kind of cases Autobahn's fuzzingclient sends, one numbered
case per test point, each on a new connection unless its name says otherwise:

  H  handshake: accept key, missing key, versions, Upgrade values (nginx forwards only
     `websocket`, any case; the helper answers 426 + JSON otherwise), subprotocols, no auth,
     request smuggling through a refused upgrade
  F  framing: payload lengths 0..65536 on the 7/16/64-bit length encodings, non-minimal
     lengths, unmasked frames, RSV bits, reserved opcodes, fragmentation (2/3/10/per-byte
     fragments, control frames between fragments, continuation errors)
  C  control frames: pings 0/125/126 bytes, ping bursts, unsolicited pongs
  X  close frames: empty, reasons, invalid codes -> 1002, valid codes answered, 1-byte
     payload, invalid UTF-8 reason, data after close
  U  UTF-8: 2/3/4-byte characters whole and split at every byte across fragments (echo
     byte-exact), invalid sequences (overlong, surrogates, > U+10FFFF, truncated, FE/FF, ...)
     -> 1007
  S  session protocol on top: binary frame, bad JSON frames -> BAD_FRAME (the session goes
     on), 1 MiB limit (FRAME_TOO_LARGE), 2000 pipelined messages, eof/close/signal

The command is `cat` without a TTY: a stdin frame comes back as stdout, which checks after
each survivable case that the session still works. The helper pings quiet sessions
(WS_PING_INTERVAL=3 in the test stack); the client answers those pings with the same
payload. Every socket read has a deadline. Last point: the helper kept its pid (no crash),
and no frame it sent broke RFC 6455 (masked, RSV bits, reserved opcode)."""
import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403

_u = urllib.parse.urlsplit(URL)
HOST = _u.hostname or "127.0.0.1"
PORT = _u.port or 80
AUTH = "Basic " + base64.b64encode(("%s:%s" % (USER, PASS)).encode()).decode()
CAT_QS = "tty=0&command=%5B%22cat%22%5D"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
T_IO = 8.0        # default deadline of one read
T_FAIL = 6.0      # how long a case waits for the server to fail the connection

OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

SERVER_VIOLATIONS = []  # every frame from the server that RFC 6455 forbids
NOTES = []              # oddities that are no failure, printed at the end
CURRENT = [""]          # the case running (for NOTES)
T_TCP_END = 7.0         # the end of the TCP connection after a close handshake (lws waits up to 5 s for an ack)


# ----------------------------------------------------------------------------- framing

def xor_mask(data, key):
    n = len(data)
    if not n:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def frame(op, payload=b"", fin=True, rsv=0, mask=True, length="auto", key=None):
    """One client frame. length: auto (minimal), 7, 16 or 64 (forced encoding of the length)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    n = len(payload)
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (op & 0xF)
    mbit = 0x80 if mask else 0
    if length == "auto":
        length = 7 if n < 126 else 16 if n < 65536 else 64
    if length == 7:
        hdr = bytes([b0, mbit | n])
    elif length == 16:
        hdr = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return hdr + payload
    key = key if key is not None else os.urandom(4)
    return hdr + key + xor_mask(payload, key)


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


def stdin_msg(data, encoding="utf8"):
    return json.dumps({"type": "stdin", "data": data, "encoding": encoding}, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


def stdin_b64(raw):
    return stdin_msg(base64.b64encode(raw).decode(), "base64")


def padded_stdin(total, tag):
    """A JSON stdin message of exactly `total` bytes; returns (message, the bytes cat echoes).
    The data ends with the JSON escape \\n (2 bytes in the message, 1 byte on stdout)."""
    head = b'{"type":"stdin","data":"'
    tail = b'"}'
    room = total - len(head) - len(tail)
    if room < 2:
        raise ValueError("a stdin message cannot be %d bytes" % total)
    tag = (tag + "-")[: room - 2]
    body = (tag + "x" * (room - 2 - len(tag))).encode()
    msg = head + body + b"\\n" + tail
    assert len(msg) == total, (len(msg), total)
    return msg, body + b"\n"


class Frame:
    __slots__ = ("fin", "rsv", "op", "payload", "masked")

    def __init__(self, fin, rsv, op, payload, masked):
        self.fin, self.rsv, self.op, self.payload, self.masked = fin, rsv, op, payload, masked

    def __repr__(self):
        return "Frame(fin=%d rsv=%d op=%#x len=%d %r)" % (self.fin, self.rsv, self.op, len(self.payload),
                                                         self.payload[:60])


# ----------------------------------------------------------------------------- HTTP side

def request_bytes(path, upgrade="websocket", connection="Upgrade", key="auto", version="13", auth=True,
                  extra=(), method="GET"):
    """An upgrade request; a header given as None is left out."""
    if key == "auto":
        key = base64.b64encode(os.urandom(16)).decode()
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s:%d" % (HOST, PORT)]
    for name, value in (("Upgrade", upgrade), ("Connection", connection), ("Sec-WebSocket-Key", key),
                        ("Sec-WebSocket-Version", version), ("Authorization", AUTH if auth is True else auth)):
        if value:
            lines.append("%s: %s" % (name, value))
    for name, value in extra:
        lines.append("%s: %s" % (name, value))
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


class Resp:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status, self.reason, self.headers, self.body, self.raw_head = status, reason, headers, body, raw_head

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8", "replace"))
        except ValueError:
            return None

    def brief(self):
        return {"status": self.status, "headers": self.headers, "body": self.body[:600].decode("utf-8", "replace")}


def read_response(sock, buf, timeout=T_IO):
    """One HTTP/1.1 response from sock (buf: bytes already read). Returns (Resp or None, rest).
    None when the connection ended (or timed out) before a complete head arrived."""
    deadline = time.monotonic() + timeout
    buf = bytearray(buf)

    def more():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            d = sock.recv(65536)
        except (socket.timeout, ConnectionError, OSError):
            return False
        if not d:
            return False
        buf.extend(d)
        return True

    while b"\r\n\r\n" not in buf:
        if not more():
            return None, bytes(buf)
    i = buf.index(b"\r\n\r\n")
    head = bytes(buf[:i]).decode("latin-1")
    del buf[: i + 4]
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        status = -1
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if status == 101 or status == 204 or status == 304:
        return Resp(status, parts[2] if len(parts) > 2 else "", headers, b"", head), bytes(buf)
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            if not more():
                break
        body = bytes(buf[:n])
        del buf[:n]
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            while b"\r\n" not in buf:
                if not more():
                    break
            if b"\r\n" not in buf:
                break
            j = buf.index(b"\r\n")
            try:
                size = int(bytes(buf[:j]).split(b";")[0], 16)
            except ValueError:
                break
            while len(buf) < j + 2 + size + 2:
                if not more():
                    break
            out += buf[j + 2: j + 2 + size]
            del buf[: j + 2 + size + 2]
            if size == 0:
                break
        body = bytes(out)
    else:
        while more():
            pass
        body = bytes(buf)
        buf = bytearray()
    return Resp(status, parts[2] if len(parts) > 2 else "", headers, body, head), bytes(buf)


def raw_connect(timeout=T_IO):
    s = socket.create_connection((HOST, PORT), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def handshake(path, timeout=T_IO, **kw):
    """Sends an upgrade request; returns (Resp or None, Conn or None, key)."""
    req, key = request_bytes(path, **kw)
    s = raw_connect(timeout)
    try:
        s.sendall(req)
        r, rest = read_response(s, b"", timeout)
    except Exception:
        s.close()
        raise
    if r is not None and r.status == 101:
        return r, Conn(s, rest), key
    s.close()
    return r, None, key


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


# ----------------------------------------------------------------------------- WebSocket side

class Conn:
    """One upgraded connection: raw frames out, frames/messages in. Server pings are answered
    (same payload) and counted, never returned as events."""

    def __init__(self, sock, buf=b""):
        self.sock = sock
        self.buf = bytearray(buf)
        self.eof = False
        self.auto_pong = True
        self.pings = []
        self.sent_close = False
        self.frames_in = 0

    # -- output
    def send(self, data):
        self.sock.settimeout(T_IO * 2)
        self.sock.sendall(data)

    def send_frame(self, op, payload=b"", **kw):
        self.send(frame(op, payload, **kw))

    def text(self, payload, **kw):
        self.send_frame(OP_TEXT, payload, **kw)

    def close_frame(self, code=None, reason=b""):
        self.sent_close = True
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- input
    def _parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        b0, b1 = b[0], b[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            if len(b) < 4:
                return None
            n = struct.unpack("!H", bytes(b[2:4]))[0]
            off = 4
        elif n == 127:
            if len(b) < 10:
                return None
            n = struct.unpack("!Q", bytes(b[2:10]))[0]
            off = 10
        masked = bool(b1 & 0x80)
        key = None
        if masked:
            if len(b) < off + 4:
                return None
            key = bytes(b[off: off + 4])
            off += 4
        if len(b) < off + n:
            return None
        payload = bytes(b[off: off + n])
        del b[: off + n]
        if masked:
            payload = xor_mask(payload, key)
        f = Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload, masked)
        self.frames_in += 1
        bad = []
        if f.masked:
            bad.append("masked")
        if f.rsv:
            bad.append("rsv=%d" % f.rsv)
        if f.op not in (0, 1, 2, 8, 9, 10):
            bad.append("reserved opcode %#x" % f.op)
        if f.op >= 8 and (not f.fin or len(f.payload) > 125):
            bad.append("bad control frame")
        if f.op == OP_CLOSE and f.payload:
            if len(f.payload) < 2:
                bad.append("close frame with a 1-byte payload")
            else:
                code = struct.unpack("!H", f.payload[:2])[0]
                if code < 1000 or code in (1004, 1005, 1006, 1015) or 1016 <= code <= 2999:
                    bad.append("close frame with code %d, which must not be sent" % code)
                try:
                    f.payload[2:].decode("utf-8")
                except UnicodeDecodeError:
                    bad.append("close reason is not UTF-8")
        if bad:
            SERVER_VIOLATIONS.append({"frame": repr(f), "problems": bad})
        return f

    def read_frame(self, timeout=T_IO):
        """Next frame; None once the connection ended; raises socket.timeout."""
        deadline = time.monotonic() + timeout
        while True:
            f = self._parse()
            if f is not None:
                return f
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no frame within %.1fs" % timeout)
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(262144)
            except socket.timeout:
                raise
            except (ConnectionError, OSError):
                d = b""
            if not d:
                self.eof = True
            else:
                self.buf.extend(d)

    def event(self, timeout=T_IO):
        """Next event: ('text'|'binary', bytes) reassembled, ('pong', payload),
        ('close', code or None, reason bytes, raw payload), ('eof',), ('timeout',),
        ('bad', description) for a server frame sequence that breaks RFC 6455."""
        deadline = time.monotonic() + timeout
        parts = None
        while True:
            left = deadline - time.monotonic()
            try:
                f = self.read_frame(max(left, 0.001))
            except socket.timeout:
                return ("timeout",)
            if f is None:
                return ("eof",)
            if f.op == OP_PING:
                self.pings.append(f.payload)
                if self.auto_pong and not self.sent_close:
                    try:
                        self.send_frame(OP_PONG, f.payload)
                    except OSError:
                        pass
                continue
            if f.op == OP_PONG:
                return ("pong", f.payload)
            if f.op == OP_CLOSE:
                code = struct.unpack("!H", f.payload[:2])[0] if len(f.payload) >= 2 else None
                return ("close", code, f.payload[2:], f.payload)
            if f.op in (OP_TEXT, OP_BIN):
                if parts is not None:
                    return ("bad", "new data frame inside a fragmented server message")
                if f.fin:
                    return ("text" if f.op == OP_TEXT else "binary", f.payload)
                parts = [f.op, bytearray(f.payload)]
                continue
            if f.op == OP_CONT:
                if parts is None:
                    return ("bad", "continuation frame without a start")
                parts[1] += f.payload
                if f.fin:
                    return ("text" if parts[0] == OP_TEXT else "binary", bytes(parts[1]))
                continue
            return ("bad", "frame %r" % f)


def summarize(ev):
    if ev[0] in ("text", "binary"):
        try:
            return json.loads(ev[1])
        except ValueError:
            return [ev[0], ev[1][:200].decode("utf-8", "replace")]
    if ev[0] == "close":
        return ["close", ev[1], ev[2][:100].decode("utf-8", "replace")]
    if ev[0] == "pong":
        return ["pong", ev[1][:60].decode("latin-1")]
    return list(ev)


def decode_data(obj):
    d = obj.get("data")
    if not isinstance(d, str):
        return b""
    if obj.get("encoding") == "base64":
        return base64.b64decode(d)
    return d.encode("utf-8", "surrogatepass")


def collect(c, nbytes, timeout=10.0, stop_on_error=False):
    """Reads until nbytes of stdout arrived. Returns (stdout bytes, other events summarized)."""
    out = bytearray()
    others = []
    deadline = time.monotonic() + timeout
    while len(out) < nbytes:
        ev = c.event(max(deadline - time.monotonic(), 0.001))
        if ev[0] == "text":
            try:
                obj = json.loads(ev[1])
            except ValueError:
                others.append(["non-JSON text", ev[1][:200].decode("utf-8", "replace")])
                continue
            if isinstance(obj, dict) and obj.get("type") == "stdout":
                out += decode_data(obj)
            else:
                others.append(obj)
                if stop_on_error:
                    break
        elif ev[0] == "pong":
            others.append(summarize(ev))
        else:
            others.append(summarize(ev))
            break
    return bytes(out), others


def echo(c, data=None, timeout=10.0):
    """Sends one stdin frame and waits for the same bytes on stdout: (ok, diag)."""
    if data is None:
        data = "alive-%s\n" % rand_suffix(10)
    c.text(stdin_msg(data))
    want = data.encode("utf-8")
    got, others = collect(c, len(want), timeout)
    ok = got == want
    return ok, None if ok else {"sent": data[:300], "got": got[:300].decode("utf-8", "replace"),
                                "got_len": len(got), "want_len": len(want), "other_events": others[:10]}


def expect_echo(c, want, timeout=10.0):
    got, others = collect(c, len(want), timeout)
    ok = got == want
    return ok, None if ok else {"want": want[:300].decode("utf-8", "replace"), "want_len": len(want),
                                "got": got[:300].decode("utf-8", "replace"), "got_len": len(got),
                                "other_events": others[:10]}


def expect_error(c, code, timeout=T_IO):
    """Reads until an error frame; (ok, diag)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        ev = c.event(max(deadline - time.monotonic(), 0.001))
        if ev[0] == "text":
            try:
                obj = json.loads(ev[1])
            except ValueError:
                obj = None
            if isinstance(obj, dict) and obj.get("type") == "error":
                e = obj.get("error") or {}
                ok = e.get("code") == code and isinstance(e.get("message"), str) and e.get("message")
                return bool(ok), None if ok else {"expected": code, "got": obj, "before": seen[:10]}
            seen.append(summarize(ev))
            continue
        seen.append(summarize(ev))
        if ev[0] != "pong":
            return False, {"expected error frame": code, "events": seen[:10]}


def expect_fail(c, codes, allow_drop=False, timeout=T_FAIL):
    """The server must fail the connection: a close frame whose code is in codes (then the
    TCP connection ends), or, with allow_drop, the connection ends without one.
    Returns (ok, diag)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        ev = c.event(max(deadline - time.monotonic(), 0.001))
        if ev[0] in ("text", "binary", "pong", "bad"):
            seen.append(summarize(ev))
            continue
        if ev[0] == "close":
            code = ev[1]
            if not c.sent_close:
                try:
                    c.close_frame(code if code in VALID_CLOSE_OUT else None)
                except OSError:
                    pass
            t_close = time.monotonic()
            tail = c.event(T_TCP_END)
            waited = time.monotonic() - t_close
            if tail[0] == "eof" and waited > 1.5:
                NOTES.append("%s: the TCP connection ended %.1fs after the close handshake (close %s, %r)"
                             % (CURRENT[0], waited, code, ev[2][:40].decode("utf-8", "replace")))
            ok = code in codes
            diag = {"expected close code": sorted(codes), "got close code": code,
                    "reason": ev[2][:100].decode("utf-8", "replace"), "then": summarize(tail), "before": seen[:8]}
            if tail[0] != "eof":
                ok = False
                diag["problem"] = "the connection stayed open after the close handshake"
            return ok, None if ok else diag
        # eof or timeout
        ok = allow_drop and ev[0] == "eof"
        return ok, None if ok else {"expected close code": sorted(codes), "got": ev[0], "before": seen[:8],
                                    "note": "no close frame from the server" if ev[0] == "eof" else
                                    "the server neither closed nor failed the connection"}


VALID_CLOSE_OUT = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011} | set(range(3000, 5000))


def expect_close_answer(c, codes, timeout=T_IO):
    """After our close frame: a close frame back with a code in codes (None = empty payload),
    then the end of the TCP connection. Returns (ok, diag)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        ev = c.event(max(deadline - time.monotonic(), 0.001))
        if ev[0] in ("text", "binary", "pong", "bad"):
            seen.append(summarize(ev))
            continue
        if ev[0] == "close":
            tail = c.event(T_TCP_END)
            ok = ev[1] in codes and tail[0] == "eof"
            return ok, None if ok else {"expected": sorted(codes, key=str), "got close code": ev[1],
                                        "close payload (hex)": ev[3][:40].hex(),
                                        "reason": ev[2][:100].decode("utf-8", "replace"), "then": summarize(tail),
                                        "before": seen[:8]}
        return False, {"expected close": sorted(codes, key=str), "got": ev[0], "before": seen[:8]}


# ----------------------------------------------------------------------------- cases

class Suite:
    def __init__(self, t, cuid):
        self.t = t
        self.cuid = cuid
        self.path = "/ws/%s?%s" % (cuid, CAT_QS)
        self.n = 0

    def open(self, **kw):
        r, c, key = handshake(self.path, **kw)
        if c is None:
            raise RuntimeError("upgrade refused: %r" % (r.brief() if r else "no response"))
        return c

    def case(self, label, fn, *args, **kw):
        """Runs fn(*args, **kw) -> (ok, diag); one test point named 'case N: label'."""
        self.n += 1
        name = "case %d: %s" % (self.n, label)
        CURRENT[0] = "case %d" % self.n
        t0 = time.monotonic()
        try:
            ok, diag = fn(*args, **kw)
        except Exception:
            ok, diag = False, traceback.format_exc()
        dt = time.monotonic() - t0
        if dt > 10:
            diag = {"slow": "%.1fs" % dt, "diag": diag}
        self.t.ok(ok, name, diag)
        return ok

    def known_gap(self, label, reason, fn, *args, **kw):
        """Like case(), for a deviation of the WebSocket library itself (libwebsockets 4.1.6,
        Debian 12) that the helper cannot correct: a TAP TODO with the reason."""
        self.n += 1
        name = "case %d: %s" % (self.n, label)
        CURRENT[0] = "case %d" % self.n
        try:
            ok, diag = fn(*args, **kw)
        except Exception:
            ok, diag = False, traceback.format_exc()
        self.t.todo(ok, name, reason, diag)
        return ok

    # -- generic shapes
    def with_conn(self, body, alive=True):
        """New connection; body(c) -> (ok, diag); then (when alive) a cat echo must still work."""
        c = self.open()
        try:
            ok, diag = body(c)
            if not ok:
                return False, diag
            if alive:
                ok2, d2 = echo(c)
                if not ok2:
                    return False, {"after the case the session no longer echoes": d2}
            return True, None
        finally:
            c.close()

    def send_then_fail(self, data, codes, allow_drop=False, pre=None):
        c = self.open()
        try:
            if pre is not None:
                ok, d = pre(c)
                if not ok:
                    return False, {"setup": d}
            c.send(data)
            return expect_fail(c, codes, allow_drop)
        finally:
            c.close()

    def send_then_echo(self, data, want):
        def body(c):
            c.send(data)
            return expect_echo(c, want)
        return self.with_conn(body)

    def send_then_error(self, data, code):
        def body(c):
            c.send(data)
            return expect_error(c, code)
        return self.with_conn(body)

    def close_case(self, payload, codes):
        c = self.open()
        try:
            c.sent_close = True
            c.send_frame(OP_CLOSE, payload)
            return expect_close_answer(c, codes)
        finally:
            c.close()


# ---- H: handshake

def h_basic(S):
    r, c, key = handshake(S.path)
    if c is None:
        return False, {"response": r.brief() if r else None}
    try:
        problems = []
        if r.headers.get("upgrade", "").lower() != "websocket":
            problems.append("Upgrade header %r" % r.headers.get("upgrade"))
        if "upgrade" not in r.headers.get("connection", "").lower():
            problems.append("Connection header %r" % r.headers.get("connection"))
        if r.headers.get("sec-websocket-accept") != accept_for(key):
            problems.append("Sec-WebSocket-Accept %r != %r" % (r.headers.get("sec-websocket-accept"), accept_for(key)))
        if "sec-websocket-extensions" in r.headers:
            problems.append("an extension was negotiated without being offered")
        ok, d = echo(c)
        if not ok:
            problems.append({"echo": d})
        return not problems, {"problems": problems, "head": r.raw_head}
    finally:
        c.close()


def h_refused(S, allowed, json_code=None, **kw):
    want = "4xx" if len(allowed) > 10 else sorted(allowed)
    r, c, _ = handshake(S.path, **kw)
    if c is not None:
        c.close()
        return False, {"expected": want, "got": 101, "response head": r.raw_head}
    if r is None:
        return False, {"expected": want, "got": "no HTTP response"}
    ok = r.status in allowed
    diag = {"expected": want, "response": r.brief()}
    if ok and json_code:
        b = r.json()
        if not (isinstance(b, dict) and b.get("code") == json_code):
            ok = False
            diag["problem"] = "body is not a JSON error with code %s" % json_code
    return ok, None if ok else diag


def h_upgraded(S, **kw):
    r, c, key = handshake(S.path, **kw)
    if c is None:
        return False, {"expected": 101, "response": r.brief() if r else None}
    try:
        if r.headers.get("sec-websocket-accept") != accept_for(key):
            return False, {"bad Sec-WebSocket-Accept": r.headers.get("sec-websocket-accept")}
        return echo(c)
    finally:
        c.close()


def h_subprotocol(S):
    r, c, key = handshake(S.path, extra=[("Sec-WebSocket-Protocol", "chat, superchat")])
    if c is None:
        return False, {"expected": 101, "sent": "Sec-WebSocket-Protocol: chat, superchat",
                       "response": r.brief() if r else "connection closed without a response"}
    try:
        p = r.headers.get("sec-websocket-protocol")
        if p is not None and p not in ("chat", "superchat"):
            return False, {"Sec-WebSocket-Protocol answered with one not offered": p}
        return echo(c)
    finally:
        c.close()


def h_extension_offer(S):
    """permessage-deflate offered: the helper negotiates no extension (so RSV1 stays reserved)."""
    r, c, key = handshake(S.path, extra=[("Sec-WebSocket-Extensions",
                                          "permessage-deflate; client_max_window_bits")])
    if c is None:
        return False, {"expected": 101, "response": r.brief() if r else None}
    try:
        if "sec-websocket-extensions" in r.headers:
            return False, {"negotiated": r.headers["sec-websocket-extensions"]}
        return echo(c)
    finally:
        c.close()


def h_keepalive_only(S):
    """Upgrade: websocket with Connection: keep-alive (no upgrade token): 101 (nginx asks the
    helper for the upgrade) or a 4xx JSON error; never a crash or a hang."""
    r, c, key = handshake(S.path, connection="keep-alive")
    if c is not None:
        try:
            return echo(c)
        finally:
            c.close()
    if r is None:
        return False, {"got": "no HTTP response"}
    b = r.json()
    ok = 400 <= r.status < 500 and isinstance(b, dict) and isinstance(b.get("code"), str)
    return ok, None if ok else {"response": r.brief()}


def pipelined(S, first, second, expect_second):
    """Sends two requests back to back on one connection; the first is refused before any
    upgrade, the second (unauthenticated, a valid upgrade otherwise) must be answered by nginx
    itself (401) or not at all, never 101 from the helper."""
    s = raw_connect()
    try:
        s.sendall(first + second)
        r1, rest = read_response(s, b"")
        r2, rest2 = read_response(s, rest, timeout=5) if r1 is not None else (None, b"")
        diag = {"first": r1.brief() if r1 else None, "second": r2.brief() if r2 else "connection ended",
                "left over": rest2[:200].decode("latin-1")}
        if r1 is None or r1.status == 101:
            return False, dict(diag, problem="the first request was not refused")
        if r2 is not None and r2.status == 101:
            return False, dict(diag, problem="the pipelined request was upgraded: it reached the helper "
                                             "past nginx's authentication")
        ok = r2 is None or r2.status in expect_second
        return ok, None if ok else diag
    finally:
        s.close()


def smuggle_frames(S, first):
    """A refused upgrade followed on the same connection by WebSocket frames (as if the proxy
    had switched to a tunnel): nginx must read them as HTTP (400 or close), nothing echoes."""
    token = "smuggled-%s" % rand_suffix(8)
    s = raw_connect()
    try:
        s.sendall(first + frame(OP_TEXT, stdin_msg(token + "\n")))
        data = bytearray()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not d:
                break
            data += d
        text = data.decode("latin-1")
        ok = "HTTP/1.1 101" not in text and token not in text
        return ok, None if ok else {"received": text[:1500]}
    finally:
        s.close()


# ---- F: framing

def f_size(S, size):
    if size < 28:
        # too short for a stdin frame: the JSON layer refuses it, the session goes on
        payload = b"{\"type\":\"stdin\"}"[:size]
        return S.send_then_error(frame(OP_TEXT, payload), "BAD_FRAME")
    msg, data = padded_stdin(size, "size%d" % size)
    return S.send_then_echo(frame(OP_TEXT, msg), data)


def f_forced_length(S, enc, size):
    msg, data = padded_stdin(size, "len%d" % enc)
    return S.send_then_echo(frame(OP_TEXT, msg, length=enc), data)


def f_nonminimal(S, enc):
    """A short payload with a longer length encoding than needed: RFC 6455 asks senders for the
    minimal one but leaves receivers free; accepted (echo) or failed with 1002, no crash."""
    msg, data = padded_stdin(60, "nonmin%d" % enc)
    c = S.open()
    try:
        c.send(frame(OP_TEXT, msg, length=enc))
        got, others = collect(c, len(data), timeout=T_FAIL)
        if got == data:
            ok, d = echo(c)
            return ok, None if ok else {"after": d}
        closes = [o for o in others if isinstance(o, list) and o[:1] == ["close"]]
        ok = bool(closes) and closes[0][1] == 1002
        return ok, None if ok else {"got": got[:200], "events": others}
    finally:
        c.close()


def f_len63(S):
    """64-bit length with the most significant bit set (RFC 6455 5.2: MUST be 0)."""
    b0 = 0x80 | OP_TEXT
    data = bytes([b0, 0x80 | 127]) + struct.pack("!Q", (1 << 63) | 10) + os.urandom(4) + b"0123456789"
    return S.send_then_fail(data, {1002}, allow_drop=True)


def f_rsv(S, rsv):
    return S.send_then_fail(frame(OP_TEXT, stdin_msg("rsv\n"), rsv=rsv), {1002})


def f_opcode(S, op):
    return S.send_then_fail(frame(op, b"reserved opcode"), {1002})


def f_unmasked(S):
    return S.send_then_fail(frame(OP_TEXT, stdin_msg("unmasked\n"), mask=False), {1002}, allow_drop=True)


def split_bytes(data, n):
    """data cut into n non-empty pieces (roughly equal)."""
    step = max(1, len(data) // n)
    cuts = [i * step for i in range(1, n)]
    out, prev = [], 0
    for c_ in cuts:
        out.append(data[prev:c_])
        prev = c_
    out.append(data[prev:])
    return out


def fragments(pieces, op=OP_TEXT):
    out = b""
    for i, p in enumerate(pieces):
        out += frame(op if i == 0 else OP_CONT, p, fin=(i == len(pieces) - 1))
    return out


def f_fragmented(S, n):
    data = "frag%d-%s\n" % (n, rand_suffix(40))
    msg = stdin_msg(data)
    return S.send_then_echo(fragments(split_bytes(msg, n)), data.encode())


def f_frag_empty_ends(S):
    """Empty first and last fragments around the message."""
    data = "fragempty-%s\n" % rand_suffix(8)
    msg = stdin_msg(data)
    pieces = [b"", msg[:10], msg[10:], b""]
    return S.send_then_echo(fragments(pieces), data.encode())


def f_frag_ping(S):
    """Fragments with a ping between them: the pong comes (same payload), then the echo."""
    data = "fragping-%s\n" % rand_suffix(8)
    msg = stdin_msg(data)
    pay = b"ping-in-the-middle-" + rand_suffix(6).encode()

    def body(c):
        c.send(frame(OP_TEXT, msg[:15], fin=False) + frame(OP_PING, pay) + frame(OP_CONT, msg[15:], fin=True))
        ev = c.event(T_IO)
        if ev[0] != "pong" or ev[1] != pay:
            return False, {"expected pong": pay.decode(), "got": summarize(ev)}
        return expect_echo(c, data.encode())
    return S.with_conn(body)


def f_frag_pong(S):
    """Fragments with an unsolicited pong between them: ignored, the message is echoed."""
    data = "fragpong-%s\n" % rand_suffix(8)
    msg = stdin_msg(data)
    return S.send_then_echo(frame(OP_TEXT, msg[:15], fin=False) + frame(OP_PONG, b"unsolicited") +
                            frame(OP_CONT, msg[15:], fin=True), data.encode())


def f_frag_close(S):
    """A close frame between fragments: answered (1000), the open message is dropped."""
    msg = stdin_msg("never-completed\n")
    c = S.open()
    try:
        c.send(frame(OP_TEXT, msg[:15], fin=False))
        c.sent_close = True
        c.send_frame(OP_CLOSE, close_payload(1000, "mid-message"))
        return expect_close_answer(c, {1000})
    finally:
        c.close()


def f_cont_without_start(S):
    return S.send_then_fail(frame(OP_CONT, stdin_msg("cont\n"), fin=True), {1002})


def f_cont_without_start_nofin(S):
    return S.send_then_fail(frame(OP_CONT, b"{\"type\":", fin=False), {1002})


def f_text_inside_fragmented(S):
    msg = stdin_msg("first\n")
    return S.send_then_fail(frame(OP_TEXT, msg[:10], fin=False) + frame(OP_TEXT, stdin_msg("second\n")), {1002})


def f_binary_inside_fragmented(S):
    msg = stdin_msg("first\n")
    return S.send_then_fail(frame(OP_TEXT, msg[:10], fin=False) + frame(OP_BIN, b"\x00\x01"), {1002})


def f_cont_after_complete(S):
    """A complete (FIN) text message followed by a continuation frame: nothing to continue."""
    data = "complete-%s\n" % rand_suffix(6)

    def pre(c):
        c.text(stdin_msg(data))
        return expect_echo(c, data.encode())
    return S.send_then_fail(frame(OP_CONT, b"dangling", fin=True), {1002}, pre=pre)


def f_frag_ping_nofin(S):
    return S.send_then_fail(frame(OP_PING, b"fragmented ping", fin=False) + frame(OP_CONT, b"-rest", fin=True),
                            {1002})


def f_frag_pong_nofin(S):
    return S.send_then_fail(frame(OP_PONG, b"fragmented pong", fin=False) + frame(OP_CONT, b"-rest", fin=True),
                            {1002})


def f_frag_close_nofin(S):
    return S.send_then_fail(frame(OP_CLOSE, close_payload(1000), fin=False), {1002})


# ---- C: control frames

def c_ping(S, size):
    pay = bytes((i * 7 + 3) % 256 for i in range(size))

    def body(c):
        c.send_frame(OP_PING, pay)
        ev = c.event(T_IO)
        ok = ev[0] == "pong" and ev[1] == pay
        return ok, None if ok else {"sent ping bytes": size, "got": summarize(ev),
                                    "got_len": len(ev[1]) if ev[0] == "pong" else None}
    return S.with_conn(body)


def c_ping_too_long(S, op=OP_PING, size=126):
    # failing the connection SHOULD send a close frame first (RFC 6455 7.1.7): a drop is allowed
    return S.send_then_fail(frame(op, b"p" * size), {1002}, allow_drop=True)


def c_ping_burst(S, n=10):
    """n pings back to back (distinct payloads): every pong carries the payload of a ping sent,
    and the most recent ping is answered (RFC 6455 5.5.3 allows answering only that one)."""
    pays = [("burst-%02d-" % i + rand_suffix(4)).encode() for i in range(n)]

    def body(c):
        c.send(b"".join(frame(OP_PING, p) for p in pays))
        pongs = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and pays[-1] not in pongs:
            ev = c.event(max(deadline - time.monotonic(), 0.001))
            if ev[0] == "pong":
                pongs.append(ev[1])
            elif ev[0] in ("eof", "close"):
                return False, {"connection ended": summarize(ev), "pongs": [p.decode() for p in pongs]}
        stray = [p for p in pongs if p not in pays]
        ok = pays[-1] in pongs and not stray
        return ok, None if ok else {"pings sent": [p.decode() for p in pays],
                                    "pongs received": [p.decode("latin-1") for p in pongs]}
    return S.with_conn(body)


def c_pong(S, payload):
    def body(c):
        c.send_frame(OP_PONG, payload)
        return True, None
    return S.with_conn(body)


def c_ping_then_text(S):
    """A ping and a stdin message in the same TCP write: pong, then the echo."""
    data = "afterping-%s\n" % rand_suffix(6)
    pay = b"pp-" + rand_suffix(5).encode()

    def body(c):
        c.send(frame(OP_PING, pay) + frame(OP_TEXT, stdin_msg(data)))
        ev = c.event(T_IO)
        if ev != ("pong", pay):
            return False, {"expected pong": pay.decode(), "got": summarize(ev)}
        return expect_echo(c, data.encode())
    return S.with_conn(body)


# ---- X: close frames

def x_close_then_text(S):
    """Data sent after our close is not processed: close 1000 comes back, no stdout."""
    c = S.open()
    try:
        c.sent_close = True
        c.send(frame(OP_CLOSE, close_payload(1000, "bye")) + frame(OP_TEXT, stdin_msg("after-close\n")))
        seen = []
        while True:
            ev = c.event(T_IO)
            if ev[0] == "text":
                seen.append(summarize(ev))
                continue
            if ev[0] == "pong":
                continue
            break
        tail = c.event(T_TCP_END) if ev[0] == "close" else ("-",)
        stdout = [s_ for s_ in seen if isinstance(s_, dict) and s_.get("type") == "stdout"]
        ok = ev[0] == "close" and ev[1] == 1000 and not stdout and tail[0] == "eof"
        return ok, None if ok else {"got": summarize(ev), "then": summarize(tail), "data before close": seen[:5]}
    finally:
        c.close()


def x_echo_reason(S):
    """Close 1000 with a reason: answered with 1000 (the reason may be echoed)."""
    reason = "normal closure, " + rand_suffix(6)
    c = S.open()
    try:
        c.sent_close = True
        c.send_frame(OP_CLOSE, close_payload(1000, reason))
        return expect_close_answer(c, {1000})
    finally:
        c.close()


# ---- U: UTF-8

CHARS = {2: "\u00e9", 3: "\u20ac", 4: "\U0001d11e"}


def u_whole(S, text):
    data = text + "\n"
    return S.send_then_echo(frame(OP_TEXT, stdin_msg(data)), data.encode("utf-8"))


def u_split(S, nbytes, pos):
    """The stdin message cut into two fragments `pos` bytes into a `nbytes`-byte character."""
    ch = CHARS[nbytes]
    data = "split<" + ch + ">" + rand_suffix(4) + "\n"
    msg = stdin_msg(data)
    start = msg.index(ch.encode("utf-8"))
    cut = start + pos
    return S.send_then_echo(frame(OP_TEXT, msg[:cut], fin=False) + frame(OP_CONT, msg[cut:], fin=True),
                            data.encode("utf-8"))


def u_per_byte(S):
    """Every byte of a message full of multi-byte characters in its own fragment."""
    data = "\u03ba\u1f79\u03c3\u03bc\u03b5 \u00e9\u20ac\U0001d11e\U0001f600\n"
    msg = stdin_msg(data)
    return S.send_then_echo(fragments([msg[i:i + 1] for i in range(len(msg))]), data.encode("utf-8"))


def u_invalid(S, bad, where="middle"):
    """Invalid UTF-8 inside the JSON string of a stdin frame: close 1007."""
    head = b'{"type":"stdin","data":"x'
    if where == "end":
        payload = head + bad  # the message ends inside (or right after) the bad sequence
    else:
        payload = head + bad + b'y\\n"}'
    return S.send_then_fail(frame(OP_TEXT, payload), {1007})


def u_invalid_fragmented(S, first, second):
    return S.send_then_fail(frame(OP_TEXT, first, fin=False) + frame(OP_CONT, second, fin=True), {1007})


# ---- S: the session protocol

def s_binary(S, fragmented=False):
    def body(c):
        if fragmented:
            c.send(frame(OP_BIN, b"\x00\x01\x02", fin=False) + frame(OP_CONT, b"\x03\x04", fin=True))
        else:
            c.send_frame(OP_BIN, stdin_msg("binary\n"))
        ok, d = expect_error(c, "BAD_FRAME")
        if not ok:
            return ok, d
        if fragmented:
            # one error for the one message, not one per fragment
            c.text(stdin_msg("probe\n"))
            got, others = collect(c, 6)
            errs = [o for o in others if isinstance(o, dict) and o.get("type") == "error"]
            if got != b"probe\n" or errs:
                return False, {"after a fragmented binary message": {"stdout": got.decode("utf-8", "replace"),
                                                                     "others": others}}
        return True, None
    return S.with_conn(body)


def s_bad_json(S, payload, code="BAD_FRAME"):
    return S.send_then_error(frame(OP_TEXT, payload), code)


def s_base64(S):
    raw = bytes(range(256)) + b"\xff\xfe\x80\n"
    return S.send_then_echo(frame(OP_TEXT, stdin_b64(raw)), raw)


def send_async(c, data, timeout=30.0):
    """Sends data from a thread (on a dup of the socket, with its own timeout) while the caller
    reads; returns a function that waits for the thread and gives its error (None when fine)."""
    box = {}
    sock = c.sock.dup()

    def sender():
        try:
            sock.settimeout(timeout)
            sock.sendall(data)
        except Exception as e:  # noqa: BLE001
            box["err"] = repr(e)
        finally:
            sock.close()
    th = threading.Thread(target=sender, daemon=True)
    th.start()

    def join():
        th.join(timeout)
        return "sender still running" if th.is_alive() else box.get("err")
    return join


def s_too_large(S, fragmented, size=2 << 20):
    msg, _ = padded_stdin(size, "big")

    def body(c):
        if fragmented:
            data = fragments([msg[i:i + 65536] for i in range(0, len(msg), 65536)])
        else:
            data = frame(OP_TEXT, msg)
        join = send_async(c, data)
        ok, d = expect_error(c, "FRAME_TOO_LARGE", timeout=20)
        err = join()
        if err:
            return False, {"send failed": err, "error frame": d}
        return ok, d
    return S.with_conn(body)


def s_limit_exact(S):
    """A message of exactly WS_MAX_FRAME (1 MiB) is accepted and echoed in full."""
    msg, data = padded_stdin(1 << 20, "limit")

    def body(c):
        join = send_async(c, frame(OP_TEXT, msg))
        ok, d = expect_echo(c, data, timeout=30)
        err = join()
        return ok and not err, d or err
    return S.with_conn(body)


def s_pipelined(S, n=2000):
    lines = ["m%05d\n" % i for i in range(n)]
    data = b"".join(frame(OP_TEXT, stdin_msg(l)) for l in lines)
    want = "".join(lines).encode()

    def body(c):
        join = send_async(c, data)
        got, others = collect(c, len(want), timeout=30)
        err = join()
        if got == want and not err:
            return True, None
        # first difference, for the diagnostics
        i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
        return False, {"got_len": len(got), "want_len": len(want), "first difference at": i,
                       "got around": got[max(0, i - 20): i + 20].decode("utf-8", "replace"),
                       "others": others[:10], "send": err}
    return S.with_conn(body)


def s_end(S, msg, want_code):
    """A session-ending message: an exit frame with want_code, then close 1000."""
    c = S.open()
    try:
        ok, d = echo(c)
        if not ok:
            return False, {"setup echo": d}
        c.send(msg)
        seen = []
        while True:
            ev = c.event(10)
            if ev[0] in ("text", "pong"):
                seen.append(summarize(ev))
                continue
            break
        exits = [f for f in seen if isinstance(f, dict) and f.get("type") == "exit"]
        tail = ("-",)
        if ev[0] == "close":
            try:
                c.close_frame(1000)
            except OSError:
                pass
            tail = c.event(T_TCP_END)
        codes = [e.get("code") for e in exits]
        code_ok = codes == [want_code] if want_code is not None else \
            (len(codes) == 1 and isinstance(codes[0], int) and not isinstance(codes[0], bool))
        ok = ev[0] == "close" and ev[1] == 1000 and code_ok and tail[0] == "eof"
        return ok, None if ok else {"frames": seen[-8:], "end": summarize(ev), "then": summarize(tail)}
    finally:
        c.close()


# ----------------------------------------------------------------------------- helper process

def helper_pids():
    """pids of this stack's cm-ws (pgrep -x cm-ws, kept when below CM_SERVE_PID or started
    with this run's env file)."""
    try:
        out = subprocess.run(["pgrep", "-x", "cm-ws"], stdout=subprocess.PIPE, timeout=10).stdout.decode()
    except Exception:
        return []
    pids = [int(p) for p in out.split()]
    mine = {p for p, _, _, _ in find_procs("cm-ws")}
    tmp = os.environ.get("CM_IT_TMP", "")
    res = []
    for p in pids:
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if p in mine or (tmp and (tmp + "/env") in cmd):
            res.append(p)
    return sorted(res)


# ----------------------------------------------------------------------------- main

def main(t):
    t0 = time.monotonic()
    s = api()
    cuid = must_create(s, t)["cuid"]
    t.status(action(s, cuid, "start"), 200, "start the container")
    pids0 = wait_until(helper_pids, timeout=10)
    t.ok(len(pids0) == 1, "this stack's helper runs (pgrep -x cm-ws): %s" % pids0)
    S = Suite(t, cuid)
    P = S.path

    # ---------------- H: handshake
    S.case("H basic upgrade: 101, Upgrade/Connection, correct Sec-WebSocket-Accept, no extension, echo",
           h_basic, S)
    S.case("H missing Sec-WebSocket-Key -> 4xx (RFC 6455 4.2.1: e.g. 400)", h_refused, S, set(range(400, 500)), None, key=None)
    S.case("H Sec-WebSocket-Version: 8 -> 426 or 400 (RFC 6455 4.4)", h_refused, S, {400, 426}, None, version="8")
    S.case("H Sec-WebSocket-Version: 14 -> 426 or 400", h_refused, S, {400, 426}, None, version="14")
    S.case("H no Sec-WebSocket-Version -> 426 or 400 (RFC 6455 4.2.1)", h_refused, S, {400, 426}, None, version=None)
    S.case("H Upgrade: h2c -> not upgraded (426 WEBSOCKET_REQUIRED JSON)", h_refused, S, {426},
           "WEBSOCKET_REQUIRED", upgrade="h2c", connection="Upgrade, HTTP2-Settings",
           extra=[("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")])
    S.case("H Upgrade: websocket2 -> not upgraded (426 WEBSOCKET_REQUIRED JSON)", h_refused, S, {426},
           "WEBSOCKET_REQUIRED", upgrade="websocket2")
    S.case("H Upgrade: websocket, h2c (a list) -> not upgraded (426 WEBSOCKET_REQUIRED JSON)", h_refused, S,
           {426}, "WEBSOCKET_REQUIRED", upgrade="websocket, h2c")
    S.case("H no Upgrade header -> 426 WEBSOCKET_REQUIRED JSON", h_refused, S, {426}, "WEBSOCKET_REQUIRED",
           upgrade=None, connection="keep-alive")
    S.case("H Upgrade: websocket (lowercase) -> 101 + echo", h_upgraded, S, upgrade="websocket")
    S.case("H Upgrade: WEBSOCKET (uppercase) -> 101 + echo", h_upgraded, S, upgrade="WEBSOCKET")
    S.case("H Upgrade: WebSocket, Connection: keep-alive, Upgrade (browser style) -> 101 + echo", h_upgraded, S,
           upgrade="WebSocket", connection="keep-alive, Upgrade")
    S.case("H Sec-WebSocket-Protocol: chat, superchat (not known) -> still 101 + echo", h_subprotocol, S)
    S.case("H permessage-deflate offered -> 101 without any extension negotiated + echo", h_extension_offer, S)
    S.case("H Upgrade: websocket with Connection: keep-alive only -> 101 or 4xx JSON, no crash",
           h_keepalive_only, S)
    S.case("H upgrade without credentials -> 401", h_refused, S, {401}, None, auth=None)
    bad_h2c, _ = request_bytes(P, upgrade="h2c", connection="Upgrade")
    bad_key, _ = request_bytes(P, key=None)
    bad_up2, _ = request_bytes(P, upgrade="websocket2")
    noauth, _ = request_bytes(P, auth=None)
    spoof, _ = request_bytes(P, auth=None, extra=[("X-CM-User", "admin"), ("X-CM-Query", CAT_QS)])
    S.case("H smuggling: unauthenticated upgrade pipelined after a refused h2c upgrade -> 401, never 101",
           pipelined, S, bad_h2c, noauth, {401})
    S.case("H smuggling: unauthenticated upgrade pipelined after an upgrade without key (refused) -> 401, never 101",
           pipelined, S, bad_key, noauth, {401})
    S.case("H smuggling: upgrade with a forged X-CM-User pipelined after a refused websocket2 upgrade "
           "-> 401, never 101", pipelined, S, bad_up2, spoof, {401})
    S.case("H smuggling: WebSocket frames right after a refused h2c upgrade are not tunnelled (no 101, no echo)",
           smuggle_frames, S, bad_h2c)
    S.case("H smuggling: WebSocket frames right after an upgrade without key (refused) are not tunnelled",
           smuggle_frames, S, bad_key)

    # ---------------- F: framing
    for size in (0, 1, 125, 126, 127, 65535, 65536):
        kind = "BAD_FRAME, session goes on" if size < 27 else "echoed exactly"
        enc = "7-bit" if size < 126 else "16-bit" if size < 65536 else "64-bit"
        S.case("F text frame of %d bytes (%s length) -> %s" % (size, enc, kind), f_size, S, size)
    S.case("F 100000-byte message, 64-bit length -> echoed exactly", f_forced_length, S, 64, 100000)
    S.case("F 60-byte message with a 16-bit length field (non-minimal) -> echoed or 1002", f_nonminimal, S, 16)
    S.case("F 60-byte message with a 64-bit length field (non-minimal) -> echoed or 1002", f_nonminimal, S, 64)
    S.case("F 64-bit length with the top bit set -> connection failed (1002 or dropped)", f_len63, S)
    S.known_gap("F unmasked client frame -> connection failed, 1002 or dropped (RFC 6455 5.1: MUST close)",
                "libwebsockets 4.1 accepts unmasked client frames (nginx passes frames through as they are)",
                f_unmasked, S)
    for rsv, nm in ((4, "RSV1"), (2, "RSV2"), (1, "RSV3"), (7, "RSV1+2+3")):
        S.case("F text frame with %s set (no extension) -> close 1002" % nm, f_rsv, S, rsv)
    for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF):
        S.case("F reserved opcode %#x -> close 1002" % op, f_opcode, S, op)
    for n in (2, 3, 10):
        S.case("F JSON message in %d fragments -> echoed as one" % n, f_fragmented, S, n)
    S.case("F fragmented message with empty first and last fragments -> echoed", f_frag_empty_ends, S)
    S.case("F ping between fragments -> pong (same payload) then the echo", f_frag_ping, S)
    S.case("F unsolicited pong between fragments -> ignored, echoed", f_frag_pong, S)
    S.case("F close between fragments -> close 1000 answered", f_frag_close, S)
    S.case("F continuation frame without a start (FIN) -> close 1002", f_cont_without_start, S)
    S.case("F continuation frame without a start (no FIN) -> close 1002", f_cont_without_start_nofin, S)
    S.case("F continuation frame after a complete message -> close 1002", f_cont_after_complete, S)
    S.case("F new text frame while a fragmented message is open -> close 1002", f_text_inside_fragmented, S)
    S.case("F binary frame while a fragmented text message is open -> close 1002", f_binary_inside_fragmented, S)
    S.case("F fragmented ping (FIN=0) -> close 1002", f_frag_ping_nofin, S)
    S.case("F fragmented pong (FIN=0) -> close 1002", f_frag_pong_nofin, S)
    S.case("F fragmented close (FIN=0) -> close 1002", f_frag_close_nofin, S)

    # ---------------- C: control frames
    S.case("C ping, empty payload -> empty pong", c_ping, S, 0)
    S.case("C ping, 125-byte binary payload -> pong with the same 125 bytes", c_ping, S, 125)
    S.case("C ping, 126-byte payload -> connection failed (1002 or dropped; RFC 6455 5.5, 7.1.7)", c_ping_too_long, S)
    S.case("C pong, 126-byte payload -> connection failed (1002 or dropped)", c_ping_too_long, S, OP_PONG, 126)
    S.case("C ping with a 16-bit length of 65535 -> connection failed (1002 or dropped)", c_ping_too_long, S,
           OP_PING, 65535)
    S.known_gap("C 10 pings back to back -> the last one answered, no stray pong (RFC 6455 5.5.2, 5.5.3)",
                "libwebsockets 4.1 keeps the first pending ping's payload and drops later ones", c_ping_burst, S)
    S.case("C unsolicited empty pong -> ignored, session works", c_pong, S, b"")
    S.case("C unsolicited pong with payload -> ignored, session works", c_pong, S, b"unsolicited pong")
    S.case("C ping and a stdin message in one write -> pong then echo", c_ping_then_text, S)

    # ---------------- X: close frames
    S.case("X close without payload -> close answered (empty or 1000)", S.close_case, b"", {None, 1000})
    S.case("X close 1000 with a reason -> close 1000", x_echo_reason, S)
    S.case("X close 1000 with a 123-byte reason (the maximum) -> close 1000", S.close_case,
           close_payload(1000, "r" * 123), {1000})
    S.known_gap("X close with a 1-byte payload -> close 1002 (RFC 6455 5.5.1)",
                "libwebsockets 4.1 echoes a 1-byte close payload", S.close_case, b"\x03", {1002})
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999):
        S.case("X close with invalid code %d -> close 1002" % code, S.close_case, close_payload(code), {1002})
    for code in (5000, 65535):
        S.case("X close with code %d (no range of RFC 6455; Autobahn 7.13 informational) -> close 1002 or %d "
               "answered" % (code, code), S.close_case, close_payload(code), {1002, code})
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999):
        S.case("X close with valid code %d -> close answered (%d or 1000)" % (code, code), S.close_case,
               close_payload(code, "c%d" % code), {code, 1000})
    S.case("X close 1000 with an invalid UTF-8 reason -> connection failed (1007, 1002 or dropped; RFC 6455 8.1, 7.1.7)",
           S.send_then_fail, frame(OP_CLOSE, close_payload(1000, b"bad \xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80 utf8")),
           {1007, 1002}, True)
    S.case("X data frame after our close is not processed -> close 1000, no stdout", x_close_then_text, S)

    # ---------------- U: UTF-8
    S.case("U 2-byte characters in one frame -> echoed byte-exact", u_whole, S, "caf\u00e9 \u00fc\u00df\u00f1")
    S.case("U 3-byte characters in one frame -> echoed byte-exact", u_whole, S, "\u20ac \u2603 \u4e2d\u6587")
    S.case("U 4-byte characters in one frame -> echoed byte-exact", u_whole, S, "\U0001d11e \U0001f600 \U00010348")
    S.case("U mixed: Hello-\u00b5@\u00df\u00f6\u00e4\u00fc\u00e0\u00e1-UTF-8!! + U+10FFFF -> echoed byte-exact",
           u_whole, S, "Hello-\u00b5@\u00df\u00f6\u00e4\u00fc\u00e0\u00e1-UTF-8!! \U0010ffff \ufeff")
    for nb in (2, 3, 4):
        for pos in range(1, nb):
            S.case("U %d-byte character split after its byte %d across two fragments -> echoed byte-exact"
                   % (nb, pos), u_split, S, nb, pos)
    S.case("U every byte of a multi-byte message in its own fragment -> echoed byte-exact", u_per_byte, S)
    invalid = [
        ("overlong '/' (C0 AF)", b"\xc0\xaf"),
        ("overlong 3-byte (E0 80 AF)", b"\xe0\x80\xaf"),
        ("overlong 4-byte (F0 80 80 AF)", b"\xf0\x80\x80\xaf"),
        ("surrogate U+D800 (ED A0 80)", b"\xed\xa0\x80"),
        ("surrogate U+DFFF (ED BF BF)", b"\xed\xbf\xbf"),
        ("above U+10FFFF (F4 90 80 80)", b"\xf4\x90\x80\x80"),
        ("F5 lead byte", b"\xf5\x80\x80\x80"),
        ("FE byte", b"\xfe"),
        ("FF byte", b"\xff"),
        ("lone continuation byte 80", b"\x80"),
        ("truncated 4-byte sequence followed by ASCII", b"\xf0\x9d\x84"),
    ]
    for label, bad in invalid:
        S.case("U invalid UTF-8: %s in a text frame -> close 1007" % label, u_invalid, S, bad)
    S.case("U invalid UTF-8: message ends inside a 3-byte sequence (E2 82) -> close 1007", u_invalid, S,
           b"\xe2\x82", "end")
    S.case("U invalid UTF-8: fragmented message ends inside a 4-byte sequence -> close 1007",
           u_invalid_fragmented, S, b'{"type":"stdin","data":"ab', b'cd\xf0\x9f\x98')
    S.case("U invalid UTF-8 in the second fragment (valid first) -> close 1007", u_invalid_fragmented, S,
           b'{"type":"stdin","data":"\xce\xba\xe1\xbd\xb9', b'\xed\xa0\x80"}')

    # ---------------- S: the session protocol
    S.case("S binary frame -> BAD_FRAME error frame, session goes on", s_binary, S)
    S.case("S fragmented binary message -> one BAD_FRAME, session goes on", s_binary, S, True)
    for label, payload in (("not JSON", b"hello, cat"), ("a JSON array", b'["stdin","x"]'),
                           ("a JSON string", b'"stdin"'), ("truncated JSON", b'{"type":"stdin","data":"ab'),
                           ("unknown type", b'{"type":"launch","data":"x"}'),
                           ("type not a string", b'{"type":1}'),
                           ("stdin without data", b'{"type":"stdin"}'),
                           ("stdin data not a string", b'{"type":"stdin","data":42}'),
                           ("stdin with bad base64", b'{"type":"stdin","data":"@@not base64@@","encoding":"base64"}'),
                           ("stdin with an unknown encoding", b'{"type":"stdin","data":"x","encoding":"latin1"}'),
                           ("signal with an unknown name", b'{"type":"signal","name":"USR1"}'),
                           ("resize with cols 0", b'{"type":"resize","cols":0,"rows":10}')):
        S.case("S %s -> BAD_FRAME error frame, session goes on" % label, s_bad_json, S, payload)
    S.case("S resize on a session without a TTY -> NO_TTY error frame, session goes on", s_bad_json, S,
           b'{"type":"resize","cols":100,"rows":30}', "NO_TTY")
    S.case("S stdin in base64 (all 256 byte values) -> the same bytes on stdout", s_base64, S)
    S.case("S 2 MiB message in one frame -> FRAME_TOO_LARGE, session goes on", s_too_large, S, False)
    S.case("S 2 MiB message in 64 KiB fragments -> FRAME_TOO_LARGE, session goes on", s_too_large, S, True)
    S.case("S message of exactly 1 MiB (WS_MAX_FRAME) -> accepted, echoed in full", s_limit_exact, S)
    S.case("S message of 1 MiB + 1 byte -> FRAME_TOO_LARGE, session goes on", s_too_large, S, False,
           (1 << 20) + 1)
    S.case("S 2000 stdin messages pipelined without reading -> all echoed in order", s_pipelined, S)
    S.case("S eof -> exit 0, then close 1000", s_end, S, frame(OP_TEXT, b'{"type":"eof"}'), 0)
    S.case("S {\"type\":\"close\"} -> one exit frame, then close 1000", s_end, S,
           frame(OP_TEXT, b'{"type":"close"}'), None)
    S.case("S signal INT -> exit 130, then close 1000", s_end, S,
           frame(OP_TEXT, b'{"type":"signal","name":"INT"}'), 130)

    # ---------------- the end
    t.ok(S.n >= 80, "%d conformance cases ran" % S.n)
    # the echoed 1-byte close payload is the known library gap above (reported there as TODO)
    known = [v for v in SERVER_VIOLATIONS if v["problems"] == ["close frame with a 1-byte payload"]]
    other = [v for v in SERVER_VIOLATIONS if v not in known]
    t.ok(not other, "no frame from the server broke RFC 6455 (masked, RSV, opcode, control size)", other[:10])
    pids1 = helper_pids()
    t.ok(pids0 and pids1 == pids0, "the helper has the same pid as at the start (no crash): %s -> %s"
         % (pids0, pids1))
    for n_ in NOTES:
        t.diag("note: " + n_)
    t.diag("t153 ran %d cases in %.1fs" % (S.n, time.monotonic() - t0))


if __name__ == "__main__":
    run(main)
