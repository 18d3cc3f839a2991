#!/usr/bin/python3
"""t190 TLS: Debian's sslscan against the HTTPS listener: only TLS 1.2 and 1.3, forward
secrecy on every accepted suite, no renegotiation, not vulnerable to Heartbleed; HSTS on
the answers (API, nginx's own errors and the WebSocket route)."""
import os
import shutil
import subprocess
import sys
import urllib.parse
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from cmtest import *  # noqa: E402,F403


def main(t):
    if not shutil.which("sslscan"):
        t.ok(False, "sslscan is installed (scripts/install-deps installs it)")
        return
    hostport = urllib.parse.urlsplit(HTTPS_URL).netloc
    p = subprocess.run(["sslscan", "--no-colour", "--xml=-", hostport], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=180)
    text = p.stdout.decode("utf-8", "replace")
    start = text.find("<?xml")
    root = ET.fromstring(text[start:]) if start >= 0 else None
    t.ok(root is not None and root.find(".//error") is None, "sslscan ran against %s" % hostport, text[:800])
    if root is None:
        return
    enabled = {("%s %s" % (e.get("type"), e.get("version"))): e.get("enabled") == "1" for e in root.iter("protocol")}
    t.eq(sorted(k for k, v in enabled.items() if v), ["tls 1.2", "tls 1.3"], "only TLS 1.2 and 1.3 are offered", enabled)
    ciphers = [(c.get("sslversion"), c.get("cipher")) for c in root.iter("cipher")]
    t.ok(len(ciphers) >= 3, "%d suites accepted" % len(ciphers), ciphers)
    no_fs = [c for c in ciphers if c[0] == "TLSv1.2" and not c[1].startswith(("ECDHE-", "DHE-"))]
    t.eq(no_fs, [], "forward secrecy on every TLS 1.2 suite (TLS 1.3 suites always have it)")
    weak = [c for c in root.iter("cipher") if c.get("strength") in ("weak", "null", "anonymous", "medium")]
    t.eq([c.get("cipher") for c in weak], [], "no weak, null, anonymous or medium suite")
    reneg = root.find(".//renegotiation")
    t.ok(reneg is None or reneg.get("supported") == "0", "no client-initiated renegotiation",
         None if reneg is None else reneg.attrib)
    bleed = [h.attrib for h in root.iter("heartbleed") if h.get("vulnerable") != "0"]
    t.eq(bleed, [], "not vulnerable to Heartbleed")

    s = api(base=HTTPS_URL)
    s.verify = False
    for path, label in (("/healthz", "an API answer"), ("/no-such-route", "a 404"), ("/ws/x", "the WebSocket route")):
        r = s.get(path)
        hsts = r.headers.get("Strict-Transport-Security", "")
        t.ok("max-age=" in hsts, "HSTS on %s over HTTPS (%d)" % (label, r.status_code), dict(r.headers))


if __name__ == "__main__":
    import urllib3
    urllib3.disable_warnings()
    run(main)
