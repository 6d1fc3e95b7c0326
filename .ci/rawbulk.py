"""Raw bulk endpoints for `bash .ci/bench sni-bulk` (issue 16): TLS passthrough without TLS work.

The SNI proxy only reads the ClientHello; after that it forwards bytes. These endpoints keep the
client's and the backend's CPU per byte small (no encryption: the backend sends the file with
sendfile, the client reads into one 4 MiB buffer), so the proxy, not the endpoints, is what the
throughput measures.

  rawbulk.py serve PORT FILE  accept on 127.0.0.1:PORT; per connection read the ClientHello record,
                              sendfile FILE, half-close, wait for the client's close
  rawbulk.py get PORT MB      connect to 127.0.0.1:PORT, send a real ClientHello for "localhost"
                              (made by the ssl module), read MB MiB; print bytes per second
"""
import os
import socket
import ssl
import sys
import threading
import time


def read_hello(c):
    head = b""
    while len(head) < 5:
        b = c.recv(5 - len(head))
        if not b:
            return False
        head += b
    n = int.from_bytes(head[3:5], "big")
    while n > 0:
        b = c.recv(n)
        if not b:
            return False
        n -= len(b)
    return True


def serve(port, path):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", port))
    l.listen(64)
    size = os.path.getsize(path)

    def one(c):
        with c:
            if not read_hello(c):
                return
            with open(path, "rb") as f:
                off = 0
                while off < size:
                    off += os.sendfile(c.fileno(), f.fileno(), off, size - off)
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass

    while True:
        c, _ = l.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()


def client_hello():
    ctx = ssl.create_default_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        o.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def get(port, mb):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(client_hello())
    want, got = mb << 20, 0
    buf = memoryview(bytearray(4 << 20))
    t0 = time.perf_counter()
    while got < want:
        n = c.recv_into(buf)
        if n == 0:
            break
        got += n
    dt = time.perf_counter() - t0
    c.close()
    if got < want:
        sys.exit(f"rawbulk: got {got} of {want} bytes")
    print(f"{got / dt:.0f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "get":
        get(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(__doc__)
