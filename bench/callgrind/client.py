"""Drives one host under callgrind through N operations of one kind.

    client.py MODE PORT N

MODE is one of: seed (a seed exchange per connection), http (keep-alive
requests on one connection), echo (64 KiB blocks echoed on one connection),
resp-get and resp-set (Redis GET and SET on one connection, each answered
before the next), proxy (64-byte round trips on one connection through the
proxy to an echo upstream). Every reply is checked.
"""
import socket
import sys

mode, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
addr = ("127.0.0.1", port)


def roundtrips(s, request, reply):
    for _ in range(n):
        s.sendall(request)
        got = b""
        while len(got) < len(reply):
            data = s.recv(65536)
            assert data, "the server closed"
            got += data
        assert got == reply, got


if mode == "seed":
    for _ in range(n):
        s = socket.create_connection(addr)
        assert s.recv(1024) == b"HELLO,WORLD"
        s.sendall(b"this is client...")
        while s.recv(1024):
            pass
        s.close()
elif mode == "http":
    s = socket.create_connection(addr)
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
    for _ in range(n):
        s.sendall(req)
        got = b""
        while not got.endswith(b"Hello, World!\n"):
            data = s.recv(4096)
            assert data, "the server closed"
            got += data
elif mode == "echo":
    s = socket.create_connection(addr)
    block = b"x" * 65536
    for _ in range(n):
        s.sendall(block)
        got = 0
        while got < len(block):
            data = s.recv(65536)
            assert data, "the server closed"
            got += len(data)
elif mode == "resp-get":
    s = socket.create_connection(addr)
    s.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nhello\r\n")
    assert s.recv(64) == b"+OK\r\n"
    roundtrips(s, b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n", b"$5\r\nhello\r\n")
elif mode == "resp-set":
    s = socket.create_connection(addr)
    roundtrips(s, b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nhello\r\n", b"+OK\r\n")
elif mode == "proxy":
    s = socket.create_connection(addr)
    message = b"p" * 64
    roundtrips(s, message, message)
else:
    sys.exit(f"unknown mode {mode}")
