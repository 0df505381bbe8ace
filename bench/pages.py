#!/usr/bin/env python3
"""Seeds a control plane through its API and times console and portal pages against the
JSON calls that answer the same thing (bench/pages.sh starts the server and calls this).

  pages.py seed    URL TOKEN APIS GATEWAYS PARALLEL CERT_DIR
  pages.py measure URL TOKEN APIS REQUESTS WARMUP

CERT_DIR holds cert.pem and key.pem, the certificate the certificates page lists.

Standard library only. Seeding runs PARALLEL threads, each on its own keep-alive
connection. Measuring sends each pair's page and JSON call alternately, one after the
other, on two keep-alive connections (a cookie one for the page, a bearer one for the
JSON), so connection setup is not counted and a machine that slows down mid-run slows
both sides alike. The time is the client's from sending the request to reading the last
byte of the body on loopback: the server's time plus a little of Python's.
"""

import http.client
import json
import math
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

# The page, the JSON call answering the same thing, and a string both must contain (a
# 200 that is a sign-in page or an empty list would time the wrong thing). `{api}` is the
# middle API's id, `{name}` its name (the portal's API page shows the name, not the id).
# The console's gateway and API lists show every item, so their JSON calls ask for the
# most a page holds (1,000); the other console lists show a page of 100 like the API's
# default; the portal's lists show 20 a page, so their JSON calls ask for 20. The extra
# objects the list pages need (`bench-…`) are seeded after the APIs.
PAIRS = [
    ("/console/gateways", "/api/v1/gateways?limit=1000", "gw-1"),
    ("/console/apis", "/api/v1/apis?limit=1000", "{api}"),
    ("/console/apis/{api}", "/api/v1/apis/{api}", "{api}"),
    ("/console/apis/{api}/diff?from=1&to=2", "/api/v1/apis/{api}/revisions/2", "{name}"),
    ("/console/gateways/gw-1", "/api/v1/gateways/gw-1", "gw-1"),
    ("/console/apps/bench-app", "/api/v1/apps/bench-app", "bench-app"),
    ("/console/certificates", "/api/v1/certificates", "bench-cert"),
    ("/console/services", "/api/v1/services", "bench-svc"),
    ("/console/routes", "/api/v1/routes", "bench-route"),
    ("/console/consumers", "/api/v1/consumers", "bench-consumer"),
    ("/console/tiers", "/api/v1/tiers", "bench-tier"),
    ("/console/apps", "/api/v1/apps", "bench-app"),
    ("/console/users", "/api/v1/users?limit=100", "bench"),
    ("/console/roles", "/api/v1/roles", "publisher"),
    ("/console/audit", "/api/v1/audit", "bench-"),
    ("/portal", "/api/v1/portal/apis?limit=20", "api-1-v1"),
    ("/portal/apis/{api}", "/api/v1/portal/apis/{api}", "{name}"),
    ("/portal/applications", "/api/v1/portal/applications?limit=20", "bench-application"),
    ("/portal/applications/bench-application",
     "/api/v1/portal/applications/bench-application/subscriptions?limit=20", "{api}"),
]

USER = "bench"
PASSWORD = "bench password 1"


def die(msg):
    print(f"pages.py: {msg}", file=sys.stderr)
    sys.exit(1)


class Client:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, url, headers):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.headers = headers
        self.conn = None

    def request(self, method, path, body=None):
        """(status, body bytes, seconds from sending to the last byte)."""
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["content-type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                self.conn.connect()
            try:
                t0 = time.perf_counter()
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                out = resp.read()
                took = time.perf_counter() - t0
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A keep-alive connection the server closed between requests: once more
                # on a new one.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            if resp.getheader("connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            return resp.status, out, took
        raise AssertionError("unreachable")


def call(client, method, path, body=None, want=(200, 201)):
    status, out, _ = client.request(method, path, body)
    if status not in want:
        die(f"{method} {path} answered {status}: {out[:400].decode(errors='replace')}")
    return json.loads(out) if out else None


def seed_extras(url, token, apis, cert_dir):
    """What the list, app, certificate, diff and application pages show: one of each kind,
    a second revision of the middle API, and the bench user's application subscribed to it
    with a key (made with the bench user's session, as the portal makes it)."""
    admin = Client(url, {"authorization": f"Bearer {token}"})
    middle = f"api-{max(1, (apis + 1) // 2)}-v1"
    call(admin, "POST", f"/api/v1/apis/{middle}/revisions", {"note": "bench: the diff page's second"})
    call(admin, "POST", "/api/v1/services", {"name": "bench-svc", "endpoints": ["127.0.0.1:9"]})
    call(admin, "POST", "/api/v1/routes", {"name": "bench-route", "route": {"forward": {"service": "bench-svc"}}})
    call(admin, "POST", "/api/v1/tiers", {"name": "bench-tier", "limit": 1000})
    call(admin, "POST", "/api/v1/consumers", {"name": "bench-consumer"})
    call(admin, "POST", "/api/v1/apps", {"slug": "bench-app", "name": "Bench app"})
    with open(f"{cert_dir}/cert.pem") as c, open(f"{cert_dir}/key.pem") as k:
        call(admin, "POST", "/api/v1/certificates", {"name": "bench-cert", "cert_pem": c.read(), "key_pem": k.read()})
    login = call(Client(url, {}), "POST", "/api/v1/auth/login", {"name": USER, "password": PASSWORD})
    bench = Client(url, {"authorization": f"Bearer {login['token']}"})
    call(bench, "POST", "/api/v1/portal/applications", {"name": "bench-application"})
    call(bench, "POST", "/api/v1/portal/applications/bench-application/subscriptions", {"api": middle})
    call(bench, "POST", "/api/v1/portal/applications/bench-application/keys", {"type": "production"})


def seed(url, token, apis, gateways, parallel, cert_dir):
    auth = {"authorization": f"Bearer {token}"}
    local = threading.local()

    def client():
        if not hasattr(local, "c"):
            local.c = Client(url, auth)
        return local.c

    def gateway(n):
        call(client(), "POST", "/api/v1/gateways", {"name": f"gw-{n}", "hosts": [f"g{n}.example"]})

    done = [0]
    lock = threading.Lock()
    started = time.monotonic()

    def api(n):
        c = client()
        got = call(c, "POST", "/api/v1/apis", {
            "name": f"api-{n}",
            "version": "v1",
            "context": f"/api-{n}",
            "production_endpoints": ["http://127.0.0.1:9"],
            "description": f"Benchmark API number {n}: seeded by bench/pages.sh to fill the console and the portal.",
        })
        aid = got["id"]
        call(c, "POST", f"/api/v1/apis/{aid}/revisions")
        # Every API on the same two gateways: gw-1's page lists every API deployed to it,
        # its heaviest case.
        call(c, "POST", f"/api/v1/apis/{aid}/deployments", {"revision": 1, "gateways": ["gw-1", "gw-2"]})
        call(c, "POST", f"/api/v1/apis/{aid}/lifecycle", {"state": "published"})
        with lock:
            done[0] += 1
            if done[0] % 100 == 0 or done[0] == apis:
                print(f"  {done[0]}/{apis} APIs ({time.monotonic() - started:.0f} s)", file=sys.stderr)

    def run(fn, items):
        with ThreadPoolExecutor(parallel) as pool:
            for f in [pool.submit(fn, i) for i in items]:
                f.result()

    run(gateway, range(1, gateways + 1))
    print(f"  {gateways} gateways ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    run(api, range(1, apis + 1))
    call(Client(url, auth), "POST", "/api/v1/users", {"name": USER, "password": PASSWORD, "roles": ["admin"]})
    seed_extras(url, token, apis, cert_dir)
    print(f"seeded in {time.monotonic() - started:.1f} s", file=sys.stderr)


def pct(xs, p):
    """The nearest-rank percentile: of 100 samples, p99 is the 99th smallest."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def measure(url, token, apis, requests, warmup):
    # A session of the bench user (an admin) for both sides: the page gets it as the
    # console's cookie, the JSON call as a bearer token, so both see the same things.
    login = call(Client(url, {}), "POST", "/api/v1/auth/login", {"name": USER, "password": PASSWORD})
    session = login["token"]
    page_c = Client(url, {"cookie": f"portico_session={session}", "accept": "text/html"})
    json_c = Client(url, {"authorization": f"Bearer {session}", "accept": "application/json"})
    n = max(1, (apis + 1) // 2)
    middle, name = f"api-{n}-v1", f"api-{n}"

    def get(client, path, needle):
        status, out, took = client.request("GET", path)
        if status != 200:
            die(f"GET {path} answered {status}: {out[:400].decode(errors='replace')}")
        if needle.encode() not in out:
            die(f"GET {path} answered 200 without `{needle}`: {out[:400].decode(errors='replace')}")
        return took, len(out)

    rows = []
    for page, api, needle in PAIRS:
        page, api, needle = (s.replace("{api}", middle).replace("{name}", name) for s in (page, api, needle))
        for _ in range(warmup):
            get(page_c, page, needle)
            get(json_c, api, needle)
        pt, jt = [], []
        for _ in range(requests):
            t, psize = get(page_c, page, needle)
            pt.append(t * 1000)
            t, jsize = get(json_c, api, needle)
            jt.append(t * 1000)
        row = {
            "page": page, "json": api,
            "p50": pct(pt, 50), "p99": pct(pt, 99), "max": max(pt),
            "j50": pct(jt, 50), "j99": pct(jt, 99), "jmax": max(jt),
            "pkb": psize / 1024, "jkb": jsize / 1024,
        }
        rows.append(row)
        print(f"  {page}  p50 {row['p50']:.1f} ms  p99 {row['p99']:.1f} ms   {api}  p50 {row['j50']:.1f} ms  p99 {row['j99']:.1f} ms", file=sys.stderr)

    print(f"\nms over {requests} requests each, page and JSON call alternating, after {warmup} warm-up pairs")
    print("\n| page | p50 | p99 | max | KiB | JSON call | JSON p50 | JSON p99 | JSON max | JSON KiB | page/JSON p50 | page/JSON p99 | p99 <= 50 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['page']}` | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['pkb']:.0f} "
              f"| `{r['json']}` | {r['j50']:.1f} | {r['j99']:.1f} | {r['jmax']:.1f} | {r['jkb']:.0f} "
              f"| {r['p50'] / r['j50']:.2f} | {r['p99'] / r['j99']:.2f} | {'yes' if r['p99'] <= 50 else 'NO'} |")


def main():
    wanted = {"seed": 8, "measure": 7}
    if len(sys.argv) < 2 or wanted.get(sys.argv[1]) != len(sys.argv):
        die(__doc__.split("\n\n")[1])
    url, token = sys.argv[2], sys.argv[3]
    a, b, c = (int(x) for x in sys.argv[4:7])
    if sys.argv[1] == "seed":
        seed(url, token, a, b, c, sys.argv[7])
    else:
        measure(url, token, a, b, c)


if __name__ == "__main__":
    main()
