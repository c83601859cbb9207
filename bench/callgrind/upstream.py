"""An echo server for the proxy row: echoes every connection's bytes back
until it closes. Prints its port, then serves until stdin closes (or at
most 10 minutes)."""
import socket
import sys
import threading


def echo(conn):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)


def main():
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)

    def accept():
        while True:
            conn, _ = server.accept()
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    threading.Timer(600, lambda: sys.exit(0)).start()
    sys.stdin.read()


if __name__ == "__main__":
    main()
