// An HTTP server whose state lives in the V8 heap: a counter ticking ten times a second and
// the wall time the process started (a restored process shows the same `started`).
"use strict";
const http = require("http");
let count = 0;
const started = Date.now() / 1000;
const seen = [];
setInterval(() => { count += 1; if (seen.length < 10000) seen.push(count); }, 100);
http.createServer((req, res) => {
  const body = JSON.stringify({ count, started, seen: seen.length });
  res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}).listen(Number(process.argv[2] || 8080), "0.0.0.0", () => console.log("serving"));
