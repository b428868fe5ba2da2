"""Two ends of one long-lived TCP connection, for what a checkpoint does with it.

server PORT        accepts connections; each line received is answered with
                   "<connection number> <line>", so a client sees when it is on a new one.
client HOST PORT   connects, sends a numbered line every 0.2 s and prints each answer; when the
                   connection fails (a restored client's is closed: it has a new IP) it prints
                   "reconnect after <error>" and connects again, its own counter going on.
"""

import socket
import socketserver
import sys
import threading
import time

connections = 0
lock = threading.Lock()


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        global connections
        with lock:
            connections += 1
            number = connections
        for line in self.rfile:
            self.wfile.write(f"{number} ".encode() + line)


def server(port: int) -> None:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("0.0.0.0", port), Echo) as srv:
        print(f"listening on {port}", flush=True)
        srv.serve_forever()


def client(host: str, port: int) -> None:
    sent = 0
    while True:
        try:
            with socket.create_connection((host, port), timeout=5) as conn:
                stream = conn.makefile("rwb")
                print("connected", flush=True)
                while True:
                    sent += 1
                    stream.write(f"tick {sent}\n".encode())
                    stream.flush()
                    answer = stream.readline()
                    if not answer:
                        raise ConnectionResetError("closed by the peer")
                    print(answer.decode().strip(), flush=True)
                    time.sleep(0.2)
        except OSError as exc:
            print(f"reconnect after {type(exc).__name__}: {exc}", flush=True)
            time.sleep(0.5)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]))
    else:
        client(sys.argv[2], int(sys.argv[3]))
