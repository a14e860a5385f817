"""A TLS terminator for the VLM client's HTTPS test: accepts TLS on 127.0.0.1 (Python's ssl
module, OpenSSL underneath) and forwards the plain bytes to the oracle server's port.

Usage: terminator.py CERT KEY UPSTREAM_PORT. Prints the port it listens on, then serves until
stdin closes (the test holds the pipe)."""

import socket
import ssl
import sys
import threading


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listener, ctx, upstream):
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            # A client that refuses the certificate ends its handshake here.
            conn.close()
            continue
        up = socket.create_connection(("127.0.0.1", upstream), timeout=10)
        threading.Thread(target=pump, args=(tls, up), daemon=True).start()
        threading.Thread(target=pump, args=(up, tls), daemon=True).start()


def main():
    cert, key, upstream = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(listener.getsockname()[1], flush=True)
    threading.Thread(target=serve, args=(listener, ctx, upstream), daemon=True).start()
    sys.stdin.read()


if __name__ == "__main__":
    main()
