"""A tiny PostgreSQL client (protocol 3, simple queries only), Python standard library only.

Enough for the history writer and checker: password, md5 and SCRAM-SHA-256 authentication, a
connect timeout and a per-query timeout (a query that times out closes the connection: its
outcome is unknown and the session unusable). Values come back as text (or None for NULL).
"""

import base64
import hashlib
import hmac
import os
import socket
import struct


class PgError(Exception):
    """A server error (ErrorResponse); `fields` holds its typed fields, `code` the SQLSTATE."""

    def __init__(self, fields):
        self.fields = fields
        self.code = fields.get("C", "")
        super().__init__(f"{fields.get('S', 'ERROR')} {self.code}: {fields.get('M', '')}")


class Connection:
    def __init__(self, host, port, user, password, dbname="postgres", connect_timeout=1.0,
                 timeout=1.0, application_name="stolon-vm-tests"):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        try:
            self.sock.settimeout(connect_timeout)
            params = {"user": user, "database": dbname, "application_name": application_name}
            body = struct.pack("!I", 196608) + b"".join(
                k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
            self.sock.sendall(struct.pack("!I", len(body) + 4) + body)
            self._authenticate(user, password)
            while True:
                t, payload = self._read_msg()
                if t == b"Z":
                    break
                if t == b"E":
                    raise PgError(_fields(payload))
            self.sock.settimeout(timeout)
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.sock is not None:
            try:
                self.sock.sendall(b"X\0\0\0\4")
            except OSError:
                pass
            self.sock.close()
            self.sock = None

    def _send(self, t, payload):
        self.sock.sendall(t + struct.pack("!I", len(payload) + 4) + payload)

    def _recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read_msg(self):
        head = self._recv_exact(5)
        (length,) = struct.unpack("!I", head[1:5])
        return head[:1], self._recv_exact(length - 4)

    def _authenticate(self, user, password):
        while True:
            t, payload = self._read_msg()
            if t == b"E":
                raise PgError(_fields(payload))
            if t != b"R":
                raise ConnectionError(f"unexpected message {t!r} during authentication")
            (code,) = struct.unpack("!I", payload[:4])
            if code == 0:
                return
            if code == 3:
                self._send(b"p", password.encode() + b"\0")
            elif code == 5:
                salt = payload[4:8]
                inner = hashlib.md5(password.encode() + user.encode()).hexdigest().encode()
                self._send(b"p", b"md5" + hashlib.md5(inner + salt).hexdigest().encode() + b"\0")
            elif code == 10:
                self._scram(password, payload[4:])
            else:
                raise ConnectionError(f"unsupported authentication method {code}")

    def _scram(self, password, mechanisms):
        if b"SCRAM-SHA-256\0" not in mechanisms:
            raise ConnectionError("server offers no SCRAM-SHA-256")
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n=,r={nonce}"
        first = ("n,," + first_bare).encode()
        self._send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
        t, payload = self._read_msg()
        if t == b"E":
            raise PgError(_fields(payload))
        server_first = payload[4:].decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(nonce):
            raise ConnectionError("SCRAM: bad server nonce")
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        final_bare = f"c=biws,r={attrs['r']}"
        auth_msg = f"{first_bare},{server_first},{final_bare}".encode()
        sig = hmac.new(stored_key, auth_msg, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        self._send(b"p", f"{final_bare},p={base64.b64encode(proof).decode()}".encode())
        t, payload = self._read_msg()
        if t == b"E":
            raise PgError(_fields(payload))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        expected = base64.b64encode(hmac.new(server_key, auth_msg, "sha256").digest()).decode()
        if payload[4:].decode() != f"v={expected}":
            raise ConnectionError("SCRAM: bad server signature")

    def query(self, sql):
        """Runs one simple query; returns the rows of its last result (lists of str or None)."""
        if self.sock is None:
            raise ConnectionError("connection closed")
        try:
            self._send(b"Q", sql.encode() + b"\0")
            rows, error = [], None
            while True:
                t, payload = self._read_msg()
                if t == b"T":
                    rows = []
                elif t == b"D":
                    rows.append(_row(payload))
                elif t == b"E":
                    error = PgError(_fields(payload))
                elif t == b"Z":
                    break
            if error is not None:
                raise error
            return rows
        except (OSError, ConnectionError):
            self.close()
            raise


def _fields(payload):
    out = {}
    for part in payload.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


def _row(payload):
    (n,) = struct.unpack("!H", payload[:2])
    pos, values = 2, []
    for _ in range(n):
        (length,) = struct.unpack("!i", payload[pos:pos + 4])
        pos += 4
        if length < 0:
            values.append(None)
        else:
            values.append(payload[pos:pos + length].decode())
            pos += length
    return values
