#!/usr/bin/env python3
"""The seed tutorial's server, as the floor of the benchmark.

Single-threaded and blocking, written the way the seed tutorial writes it:
socket(), bind, listen(5), then accept -> send HELLO,WORLD -> recv(1024) ->
close, one connection at a time. Only additions: a --port argument (0 picks
a free port), the `listening on` line the benchmark parses, and a clean exit
on SIGTERM. Nothing is printed per connection.
"""
import argparse
import signal
import socket
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=12345)
    parser.add_argument("--addr", default="127.0.0.1")
    args = parser.parse_args()

    # SIGTERM ends the process like Ctrl-C does, without a traceback.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args.addr, args.port))
    server.listen(5)
    host, port = server.getsockname()
    print(f"listening on {host}:{port}", flush=True)

    try:
        while True:
            conn, _addr = server.accept()
            try:
                conn.send(b"HELLO,WORLD")
                conn.recv(1024)
            except OSError:
                pass  # a client that reset must not stop the server
            conn.close()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
