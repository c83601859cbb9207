"""The seed tutorial's server on a free loopback port, serving a given number
of connections (argv[1]) and then exiting. It prints `listening on ADDR`
first so the test can find the port."""

import socket
import sys

HOST = '127.0.0.1'
PORT = 0
ADDR = (HOST, PORT)
COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 1

web = socket.socket()
web.bind(ADDR)
web.listen(5)
web.settimeout(20)
print('listening on %s:%d' % web.getsockname(), flush=True)

for _ in range(COUNT):
    client_connection, client_address = web.accept()
    client_connection.settimeout(20)
    print('link addr:')
    print(client_address)

    client_connection.send(str.encode("HELLO,WORLD"))

    data = client_connection.recv(1024)
    print(data, flush=True)

    client_connection.close()
