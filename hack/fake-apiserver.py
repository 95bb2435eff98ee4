#!/usr/bin/env python3
"""A tiny in-memory Kubernetes API server (plain HTTP, 127.0.0.1) for measuring the operator without a cluster.

Serves GET (object, list, and watch streams that stay open and quiet), PATCH (server-side apply and status merge),
PUT, POST and DELETE on any /api or /apis path. Not a conformance fake: just enough for mizzen-operator to run its
controller, reconcile and settle. Usage: fake-apiserver.py PORT [OBJECT.yaml ...]
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import yaml

LOCK = threading.Lock()
STORE = {}  # collection path -> {(namespace, name): object}
RV = [1]


def split(path):
    segs = path.strip("/").split("/")
    prefix, rest = ("/".join(segs[:2]), segs[2:]) if segs[0] == "api" else ("/".join(segs[:3]), segs[3:])
    ns = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest:
        return prefix + "/namespaces", "", None, None
    return prefix + "/" + rest[0], ns, (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)


def plural_of(obj):
    kind = obj["kind"].lower()
    return {"meshinstall": "meshinstalls"}.get(kind, kind + "s")


def load(path):
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        group_version = doc["apiVersion"]
        prefix = "api/" + group_version if "/" not in group_version else "apis/" + group_version
        meta = doc.setdefault("metadata", {})
        meta.setdefault("uid", "uid-" + meta["name"])
        meta.setdefault("generation", 1)
        meta.setdefault("resourceVersion", "1")
        STORE.setdefault(prefix + "/" + plural_of(doc), {})[(meta.get("namespace", ""), meta["name"])] = doc


def merge(target, patch):
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = v


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self):
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        coll, ns, name, _ = split(url.path)
        if name is None and query.get("watch") == ["true"]:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            deadline = time.time() + int(query.get("timeoutSeconds", ["290"])[0])
            try:
                while time.time() < deadline:
                    time.sleep(1)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            return
        with LOCK:
            objects = STORE.get(coll, {})
            if name is None:
                selector = dict(kv.split("=", 1) for kv in query.get("labelSelector", [""])[0].split(",") if "=" in kv)
                items = [o for (n, _), o in objects.items() if (not ns or n == ns)
                         and all(o["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
                return self.reply(200, {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": str(RV[0])}, "items": items})
            obj = objects.get((ns, name))
        return self.reply(200, obj) if obj else self.not_found()

    def do_PATCH(self):
        coll, ns, name, sub = split(urlparse(self.path).path)
        patch = self.body()
        with LOCK:
            RV[0] += 1
            objects = STORE.setdefault(coll, {})
            if sub == "status":
                obj = objects.get((ns, name))
                if not obj:
                    return self.not_found()
                merge(obj, {"status": patch.get("status")})
                return self.reply(200, obj)
            if coll.endswith("/events"):
                return self.reply(200, patch)
            prev = objects.get((ns, name), {})
            obj = patch
            meta = obj.setdefault("metadata", {})
            meta["uid"] = prev.get("metadata", {}).get("uid", "uid-%d" % RV[0])
            meta["resourceVersion"] = str(RV[0])
            meta["generation"] = prev.get("metadata", {}).get("generation", 0) + 1
            objects[(ns, name)] = obj
        return self.reply(200, obj)

    def do_POST(self):
        coll, ns, _, _ = split(urlparse(self.path).path)
        obj = self.body()
        with LOCK:
            RV[0] += 1
            meta = obj.setdefault("metadata", {})
            meta.setdefault("name", "generated-%d" % RV[0])
            meta["resourceVersion"] = str(RV[0])
            STORE.setdefault(coll, {})[(ns, meta["name"])] = obj
        return self.reply(201, obj)

    def do_PUT(self):
        coll, ns, name, _ = split(urlparse(self.path).path)
        obj = self.body()
        with LOCK:
            RV[0] += 1
            obj.setdefault("metadata", {})["resourceVersion"] = str(RV[0])
            STORE.setdefault(coll, {})[(ns, name)] = obj
        return self.reply(200, obj)

    def do_DELETE(self):
        coll, ns, name, _ = split(urlparse(self.path).path)
        with LOCK:
            obj = STORE.get(coll, {}).pop((ns, name), None)
        return self.reply(200, obj) if obj else self.not_found()


if __name__ == "__main__":
    for path in sys.argv[2:]:
        load(path)
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
