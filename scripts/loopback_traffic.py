"""Make some TCP traffic on loopback for a while: for demonstrations only."""

import argparse
import socket
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    end = time.monotonic() + min(args.seconds, 60.0)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()) as client:
            server, _ = listener.accept()
            with server:
                while time.monotonic() < end:
                    client.sendall(b"ping")
                    server.recv(4)
                    server.sendall(b"pong")
                    client.recv(4)


if __name__ == "__main__":
    main()
