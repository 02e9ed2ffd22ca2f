"""A small HTTP/2 (h2c, prior knowledge) client over one socket, built on
the h2 library: many requests on one connection, bodies sent under flow
control, responses with their trailers and resets collected per stream."""
import socket
import time

import h2.config
import h2.connection
import h2.events


class Exchange:
    def __init__(self, body):
        self.body = body or b""
        self.sent = 0
        self.status = None
        self.headers = {}
        self.data = b""
        self.trailers = None
        self.reset = None
        self.ended = False

    @property
    def done(self):
        return self.ended or self.reset is not None


class H2:
    def __init__(self, port, host="127.0.0.1", window=None):
        self.sock = socket.create_connection((host, port), timeout=30)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if window:
            self.conn.increment_flow_control_window(window)
        self.ex = {}
        self.goaway = None
        self.closed = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, authority, path="/", method="GET", body=None, headers=(), end=True):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"),
                (":authority", authority)] + list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=body is None and end)
        self.ex[sid] = Exchange(body)
        self._send_bodies()
        self.flush()
        return sid

    def cancel(self, sid):
        self.conn.reset_stream(sid)
        self.ex[sid].reset = "cancelled"
        self.flush()

    def _send_bodies(self):
        for sid, e in self.ex.items():
            if e.done or e.sent == len(e.body) and (e.sent or not e.body):
                continue
            while e.sent < len(e.body):
                room = min(self.conn.local_flow_control_window(sid),
                           self.conn.max_outbound_frame_size, len(e.body) - e.sent)
                if room <= 0:
                    break
                self.conn.send_data(sid, e.body[e.sent:e.sent + room])
                e.sent += room
            if e.body and e.sent == len(e.body):
                self.conn.end_stream(sid)
                e.sent += 1  # ended: never again

    def pump(self, timeout=0.1, read=True):
        """Read once (up to timeout s) and handle the events."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return
        if not data:
            self.closed = True
            return
        for ev in self.conn.receive_data(data):
            e = self.ex.get(getattr(ev, "stream_id", 0))
            if isinstance(ev, h2.events.ResponseReceived):
                e.headers = dict(ev.headers)
                e.status = int(e.headers[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                e.data += ev.data
                if read:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                e.trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded):
                e.ended = True
            elif isinstance(ev, h2.events.StreamReset) and e:
                e.reset = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.error_code
        self._send_bodies()
        self.flush()

    def wait(self, sids=None, timeout=60):
        sids = list(self.ex) if sids is None else sids
        deadline = time.time() + timeout
        while not all(self.ex[s].done for s in sids) and not self.closed:
            if time.time() > deadline:
                raise TimeoutError("streams %s did not end" % [s for s in sids if not self.ex[s].done])
            self.pump()
        return [self.ex[s] for s in sids]

    def close(self):
        self.sock.close()


def get(port, authority, path="/", method="GET", body=None, headers=()):
    """One request on a new connection: its Exchange."""
    c = H2(port)
    try:
        sid = c.request(authority, path, method, body, headers)
        return c.wait([sid])[0]
    finally:
        c.close()
