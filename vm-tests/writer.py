#!/usr/bin/env python3
"""The history writer: runs on the client host and writes about every 100 ms to each target (a
proxy or a PostgreSQL directly), each write an INSERT with a unique id. Every acknowledgement is
appended to --out as one JSON line, with the client's send and acknowledgement times (this host's
clock, the only clock the checker uses) and the reign that acknowledged it: the server address
and its current WAL timeline.

Usage: writer.py --out FILE --password-file FILE TARGET...   TARGET = name=host:port (name starts
with "proxy" for a proxy, anything else for a direct PostgreSQL). Stops on SIGTERM or SIGINT.
"""

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pgwire  # noqa: E402

SQL = ("INSERT INTO history(id, target, sent) VALUES ({id}, '{target}', {sent}) RETURNING "
       "inet_server_addr()::text, pg_walfile_name(pg_current_wal_lsn()), pg_current_wal_lsn()::text")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--password-file", required=True)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("targets", nargs="+")
    args = ap.parse_args()
    password = Path(args.password_file).read_text().strip()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    out = open(args.out, "a", buffering=1)
    lock = threading.Lock()
    stats = {}

    def worker(index, name, host, port):
        via = "proxy" if name.startswith("proxy") else "direct"
        seq, conn = 0, None
        st = stats[name] = {"acked": 0, "errors": 0}
        while not stop.is_set():
            started = time.time()
            try:
                if conn is None or conn.sock is None:
                    conn = pgwire.Connection(host, port, args.user, password,
                                             connect_timeout=args.timeout, timeout=args.timeout)
                seq += 1
                wid = (index + 1) * 10**12 + seq
                sent = time.time()
                rows = conn.query(SQL.format(id=wid, target=name, sent=f"{sent:.6f}"))
                ack = time.time()
                srv, walfile, lsn = rows[0]
                rec = {"id": wid, "target": name, "via": via, "sent": round(sent, 6),
                       "ack": round(ack, 6), "server": srv.split("/")[0], "timeline": int(walfile[:8], 16),
                       "lsn": lsn}
                with lock:
                    out.write(json.dumps(rec) + "\n")
                st["acked"] += 1
            except pgwire.PgError:
                # The session stays usable (a standby refusing the write, a lock timeout): a
                # standby promoted under this very session is what the checker must see.
                st["errors"] += 1
            except (OSError, ConnectionError, ValueError, IndexError):
                st["errors"] += 1
                if conn is not None:
                    conn.close()
                    conn = None
            stop.wait(max(0.0, args.interval - (time.time() - started)))
        if conn is not None:
            conn.close()

    threads = []
    for i, spec in enumerate(args.targets):
        name, addr = spec.split("=", 1)
        host, port = addr.rsplit(":", 1)
        th = threading.Thread(target=worker, args=(i, name, host, int(port)), daemon=True)
        th.start()
        threads.append(th)
    while not stop.is_set():
        stop.wait(1)
    for th in threads:
        th.join(timeout=3)
    out.close()
    print(json.dumps(stats), file=sys.stderr)


if __name__ == "__main__":
    main()
