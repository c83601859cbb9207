"""The seed tutorial's client, pointed at a given port on loopback."""

import socket
import sys

HOST = '127.0.0.1'
PORT = int(sys.argv[1])
ADDR = (HOST, PORT)

web = socket.socket()
web.settimeout(20)
web.connect(ADDR)
web.send(str.encode("this is client..."))

data = web.recv(1024)
print(data)

web.close()
