#!/usr/bin/env python3
"""Drives resp.wasm with the `redis` package (redis-py), in RESP2 and RESP3:
strings, counters, expiry, multi-key commands, a pipeline, errors, and a
1 MiB binary value. Usage: resp_client.py PORT. Prints `ok` and exits 0 when
every check holds; a failed check raises (exit status 1, traceback)."""

import os
import sys

import redis


def check(port, protocol):
    r = redis.Redis(host="127.0.0.1", port=port, protocol=protocol)
    prefix = f"py{protocol}:"
    assert r.ping() is True

    assert r.set(prefix + "k", "v") is True
    assert r.get(prefix + "k") == b"v"
    assert r.get(prefix + "missing") is None
    assert r.set(prefix + "k", "w", nx=True) is None
    assert r.set(prefix + "k", "w", xx=True, get=True) == b"v"
    assert r.setnx(prefix + "k", "x") is False
    assert r.getset(prefix + "k", "abc") == b"w"
    assert r.append(prefix + "k", "def") == 6
    assert r.strlen(prefix + "k") == 6

    assert r.incr(prefix + "n") == 1
    assert r.incrby(prefix + "n", 41) == 42
    assert r.decr(prefix + "n") == 41
    assert r.decrby(prefix + "n", 50) == -9
    try:
        r.incr(prefix + "k")
        raise AssertionError("INCR of a string succeeded")
    except redis.ResponseError as e:
        assert str(e) == "value is not an integer or out of range", e

    assert r.mset({prefix + "a": "1", prefix + "b": b"\x00\xff"}) is True
    assert r.mget(prefix + "a", prefix + "b", prefix + "c") == [b"1", b"\x00\xff", None]
    assert r.exists(prefix + "a", prefix + "b", prefix + "c", prefix + "a") == 3
    assert r.delete(prefix + "a", prefix + "c") == 1

    assert r.set(prefix + "t", "v", ex=100) is True
    assert 99 <= r.ttl(prefix + "t") <= 100
    assert r.expire(prefix + "t", 1000) is True
    assert 999 <= r.ttl(prefix + "t") <= 1000
    assert r.persist(prefix + "t") is True
    assert r.ttl(prefix + "t") == -1
    assert r.ttl(prefix + "missing") == -2
    assert r.set(prefix + "gone", "v", px=1) is True
    import time

    time.sleep(0.05)
    assert r.get(prefix + "gone") is None

    # A 1 MiB binary value, key included.
    value = os.urandom(1 << 20)
    key = prefix.encode() + b"big\xff\x00"
    assert r.set(key, value) is True
    assert r.get(key) == value
    assert r.strlen(key) == len(value)

    # One pipeline, replies in order.
    pipe = r.pipeline(transaction=False)
    for _ in range(100):
        pipe.incr(prefix + "p")
    pipe.get(prefix + "p")
    replies = pipe.execute()
    assert replies[:100] == list(range(1, 101)), replies
    assert replies[100] == b"100"

    try:
        r.execute_command("NOSUCH", "a")
        raise AssertionError("an unknown command succeeded")
    except redis.ResponseError as e:
        assert str(e) == "unknown command 'NOSUCH', with args beginning with: 'a' ", e
    assert r.config_get("save") == {"save": ""}
    r.close()


def main():
    port = int(sys.argv[1])
    for protocol in (2, 3):
        check(port, protocol)
    print("ok")


if __name__ == "__main__":
    main()
