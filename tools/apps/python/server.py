"""A threaded HTTP server holding its state in memory, as a checkpoint must carry it.

GET /         {"count": N, "started": T, "items": K}: a background thread counts ten times a
              second since the process started; `started` is the wall time it started at, so
              a restored process shows the same value and a restart a new one.
PUT /items/K  stores the request body under K (in memory only); GET /items/K reads it back.
"""

import http.server
import json
import sys
import threading
import time

count = 0
started = time.time()
items: dict[str, str] = {}


def tick() -> None:
    global count
    while True:
        count += 1
        time.sleep(0.1)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the server holds established connections

    def answer(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/items/"):
            key = self.path.removeprefix("/items/")
            if key in items:
                self.answer(200, {"key": key, "value": items[key]})
            else:
                self.answer(404, {"error": f"no item {key}"})
            return
        self.answer(200, {"count": count, "started": started, "items": len(items)})

    def do_PUT(self) -> None:
        key = self.path.removeprefix("/items/")
        length = int(self.headers.get("Content-Length", "0"))
        items[key] = self.rfile.read(length).decode()
        self.answer(200, {"key": key})

    def log_message(self, *args: object) -> None:
        pass


threading.Thread(target=tick, daemon=True).start()
port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
print(f"serving on {port}", flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
