"""Kafka readiness probe of deploy/local/kafka.sh and kafka-cluster.sh: exits 0 when the broker at HOST:PORT
answers a Metadata request listing at least MIN_BROKERS brokers (default 1).

    python3 deploy/local/kafka/ready.py HOST PORT [MIN_BROKERS]

An open port is not enough: a broker accepts connections before it has registered with the controller and been
unfenced, and until then topic creation fails for lack of brokers. A KRaft broker's metadata lists only the
unfenced brokers, so on a cluster MIN_BROKERS=3 means "every broker registered and unfenced". A Metadata
request v4 (which Kafka 1.0 to 4.x all serve) over a plain socket takes ~50 ms where a JVM admin tool takes
1-2 s. Standard library only: it runs with the system python3, before any virtualenv exists.
"""

import socket
import struct
import sys

CLIENT_ID = b"proxymage-kafka-ready"


def broker_count(host: str, port: int) -> int:
    # Request header v1 (api_key=3 Metadata, api_version=4, correlation_id, client_id), then the body:
    # topics = empty array (no topic details wanted), allow_auto_topic_creation = false.
    body = struct.pack(">hhih", 3, 4, 1, len(CLIENT_ID)) + CLIENT_ID + struct.pack(">ib", 0, 0)
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.settimeout(2)
        sock.sendall(struct.pack(">i", len(body)) + body)
        data = b""
        while len(data) < 16:  # size, correlation id, throttle time, broker count
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed")
            data += chunk
    _size, correlation_id, _throttle, brokers = struct.unpack(">iiii", data[:16])
    if correlation_id != 1:
        raise ConnectionError("unexpected answer")
    return int(brokers)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    wanted = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    brokers = broker_count(host, port)
    sys.exit(0 if brokers >= wanted else f"{brokers} broker(s) registered, {wanted} wanted")


if __name__ == "__main__":
    main()
