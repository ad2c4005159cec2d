#!/usr/bin/env python3
"""Sign audit events for auditproc: envelope versions 1 and 2 (docs/envelope.md).

Standard library only. Use it as a module (stamp, sign, Chain) or as a command:

    AUDITPROC_HMAC_KEYS='key prod-2026 hex:<64 hex digits>' \\
        python3 audit_sign.py audit:stream < event.json

prints the stream entry's fields as one JSON object, {"v": ..., "kid": ...,
"event": ..., "sig": ...}, for your Redis client's XADD, e.g. with redis-py:
r.xadd("audit:stream", fields). Keys come from the environment exactly as
auditproc reads them: AUDITPROC_HMAC_KEYS (inline, ";" between lines) or
AUDITPROC_HMAC_KEYS_FILE, and AUDITPROC_HMAC_ACTIVE_KEY; this recipe reads
hex keys only. Never pass a key as a command-line argument.

    python3 audit_sign.py --check-vectors testdata/vectors.json

checks this implementation against the published test vectors.

    python3 audit_sign.py --chain billing-api audit:stream < events.jsonl

signs each line of the input as the next entry of one source's chain
(envelope version 2: source id, sequence number, previous signature), with a
checkpoint every 1000 entries, and ends with the closing checkpoint; it
prints one JSON object of fields per entry, in order, for XADD. A service
keeps one Chain per process: Chain(key, kid, "billing-api").sign(stream,
event) for each event, chain.due() on a timer (at least every 60 s, also
when idle) and chain.close() when it stops; XADD every returned entry.

    python3 audit_sign.py --shard-of 3 actor < events.jsonl

prints the shard (0 to 2) of each line's event for stream.shards: 3 and
stream.partition_key: actor, or "-" for an event without the field (spread
those evenly: round-robin, or by event_id so a retry goes to the same
shard). shard_stream(stream, k) names the shard's stream, as auditproc does.
"""

import datetime
import hashlib
import zlib
import hmac
import json
import os
import secrets
import sys
import uuid

VERSION = "1"
VERSION2 = "2"
KIND_EVENT = "event"
KIND_CHECKPOINT = "checkpoint"
CHECKPOINT_EVERY = 1000
CHECKPOINT_INTERVAL_MS = 60_000
MAC_LABEL = "auditproc-envelope"
MIN_KEY_BYTES = 32
MAX_EVENT_BYTES = 1 << 20
_KID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def new_event_id(now_ns):
    """A UUIDv7 for a time in Unix nanoseconds: 48 bits of milliseconds,
    the version, 12 bits of sub-millisecond time, the variant, 62 random bits."""
    ms, sub = divmod(now_ns, 1_000_000)
    sub12 = sub * 4096 // 1_000_000
    value = (ms & (2**48 - 1)) << 80
    value |= 0x7 << 76 | sub12 << 64
    value |= 0b10 << 62 | secrets.randbits(62)
    return str(uuid.UUID(int=value))


def _timestamp(now):
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stamp(event, now=None):
    """Return (event bytes, event id) with event_id and timestamp inserted
    right after the opening "{" when missing; the other bytes are kept."""
    if isinstance(event, str):
        event = event.encode("utf-8")
    parsed = json.loads(event.decode("utf-8"), object_pairs_hook=_no_duplicates)
    if not isinstance(parsed, dict):
        raise ValueError("event must be a JSON object")
    event_id = parsed.get("event_id")
    if "event_id" in parsed and (not isinstance(event_id, str) or event_id == ""):
        raise ValueError("event_id must be a non-empty string")
    if "timestamp" in parsed:
        try:
            datetime.datetime.fromisoformat(parsed["timestamp"])
        except (TypeError, ValueError):
            raise ValueError("timestamp must be an RFC 3339 string") from None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    members = []
    if "event_id" not in parsed:
        unix_ns = (now - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)) // datetime.timedelta(microseconds=1) * 1000
        event_id = new_event_id(unix_ns)
        members.append('"event_id":' + json.dumps(event_id))
    if "timestamp" not in parsed:
        members.append('"timestamp":' + json.dumps(_timestamp(now)))
    if not members:
        return event, event_id
    text = event.decode("utf-8")
    open_at = text.index("{")
    rest = text[open_at + 1:]
    inserted = ",".join(members) + ("" if rest.strip().startswith("}") else ",")
    return (text[:open_at + 1] + inserted + rest).encode("utf-8"), event_id


def _no_duplicates(pairs):
    names = [name for name, _ in pairs]
    for name in names:
        if names.count(name) > 1:
            raise ValueError("member %r appears twice" % name)
    return dict(pairs)


def _lp(data):
    return len(data).to_bytes(4, "big") + data


def mac_input(kid, stream, event):
    """LP(label) LP(version) LP(kid) LP(stream) LP(event); LP = 4-byte big-endian length + bytes."""
    return b"".join(_lp(part) for part in (
        MAC_LABEL.encode(), VERSION.encode(), kid.encode(), stream.encode("utf-8"), event))


def sign(key, kid, stream, event):
    """Return the XADD fields of a signed envelope. event must be stamped."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError("key must be at least %d bytes" % MIN_KEY_BYTES)
    if not 1 <= len(kid) <= 64 or not set(kid) <= _KID_CHARS:
        raise ValueError("key id must be 1-64 characters of [A-Za-z0-9._-]")
    if not 1 <= len(event) <= MAX_EVENT_BYTES:
        raise ValueError("event must be 1 to %d bytes" % MAX_EVENT_BYTES)
    sig = hmac.new(key, mac_input(kid, stream, event), hashlib.sha256).hexdigest()
    return {"v": VERSION, "kid": kid, "event": event.decode("utf-8"), "sig": sig}


def mac_input2(kid, stream, src, seq, prev, kind, event):
    """Version 2: LP(label) LP("2") LP(kid) LP(stream) LP(src) LP(seq) LP(prev) LP(kind) LP(event)."""
    return b"".join(_lp(part) for part in (
        MAC_LABEL.encode(), VERSION2.encode(), kid.encode(), stream.encode("utf-8"),
        src.encode(), str(seq).encode(), prev.encode(), kind.encode(), event))


def _valid_name(name):
    return 1 <= len(name) <= 64 and set(name) <= _KID_CHARS


class Chain:
    """One source's chains (envelope version 2), one per stream: a new
    session of the source name, sequence numbers from 1 per stream, each
    entry signing its predecessor's sig. Not thread-safe: hold a lock around
    sign() when threads share it (the appends need not be serialised)."""

    def __init__(self, key, kid, name, every=CHECKPOINT_EVERY, interval_ms=CHECKPOINT_INTERVAL_MS):
        if len(key) < MIN_KEY_BYTES:
            raise ValueError("key must be at least %d bytes" % MIN_KEY_BYTES)
        if not _valid_name(kid) or not _valid_name(name):
            raise ValueError("key id and source name must be 1-64 characters of [A-Za-z0-9._-]")
        self.key, self.kid = key, kid
        self.source = name + "/" + secrets.token_hex(8)
        self.every, self.interval_ms = every, interval_ms
        self.streams = {}  # stream -> [seq, head, entries since checkpoint, last checkpoint time]
        self.closed = False

    def _next(self, stream, kind, event, now):
        st = self.streams.setdefault(stream, [0, "", 0, now])
        seq, prev = st[0] + 1, st[1]
        if not 1 <= len(event) <= MAX_EVENT_BYTES:
            raise ValueError("event must be 1 to %d bytes" % MAX_EVENT_BYTES)
        data = mac_input2(self.kid, stream, self.source, seq, prev, kind, event)
        sig = hmac.new(self.key, data, hashlib.sha256).hexdigest()
        st[0], st[1] = seq, sig
        if kind == KIND_CHECKPOINT:
            st[2], st[3] = 0, now
        else:
            st[2] += 1
        return {"v": VERSION2, "kid": self.kid, "src": self.source, "seq": str(seq), "prev": prev,
                "kind": kind, "event": event.decode("utf-8"), "sig": sig}

    def sign(self, stream, event, now=None):
        """The fields of event (stamped) as the chain's next entry on stream."""
        if self.closed:
            raise ValueError("chain closed")
        return self._next(stream, KIND_EVENT, event, now or _now())

    def _checkpoint(self, stream, closing, now):
        seq, head = self.streams[stream][0], self.streams[stream][1]
        event = ('{"event_id":%s,"timestamp":%s,"checkpoint":{"last_seq":%d,"head":%s,'
                 '"every":%d,"interval_ms":%d,"closing":%s}}') % (
            json.dumps("%s#%d" % (self.source, seq + 1)), json.dumps(_ns_timestamp(now)), seq,
            json.dumps(head), self.every, self.interval_ms, "true" if closing else "false")
        return self._next(stream, KIND_CHECKPOINT, event.encode(), now)

    def due(self, now=None):
        """The checkpoints due now (every N entries, or the interval passed,
        also with nothing written since), one per stream."""
        now = now or _now()
        out = []
        for stream, st in self.streams.items():
            if st[2] >= self.every or (now - st[3]).total_seconds() * 1000 >= self.interval_ms:
                out.append(self._checkpoint(stream, False, now))
        return out

    def close(self, now=None):
        """The closing checkpoint of every stream written to; signs no more."""
        now = now or _now()
        self.closed = True
        return [self._checkpoint(stream, True, now) for stream in list(self.streams)]


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _ns_timestamp(now):
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def shard_stream(name, k):
    """The name of stream (or any key of the trail) in shard k: shard 0 keeps
    it; shard k puts ":k" at the end of its hash tag, "{audit}:stream" ->
    "{audit:1}:stream", or at the end of a name without one."""
    if k == 0:
        return name
    s = name.find("{")
    if s >= 0:
        e = name.find("}", s + 1)
        if e > s + 1:
            return name[:e] + ":" + str(k) + name[e:]
    return name + ":" + str(k)


class _Text(str):
    """A JSON number as written (the shard of a number is that of its text)."""


def shard_of(event, key, n):
    """The shard of event (JSON text, bytes or str) among n for partition
    key key: CRC-32 of the value of its top-level field key (a string by its
    text, a number or boolean by its JSON text), modulo n; None when the event
    has no such field (or it is null): spread those evenly."""
    if n < 2:
        return 0
    if isinstance(event, bytes):
        event = event.decode("utf-8")
    pairs = json.loads(event, object_pairs_hook=lambda p: p, parse_int=_Text,
                       parse_float=_Text, parse_constant=_Text)
    for name, value in pairs:
        if name != key:
            continue
        if value is None:
            return None
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = value
        else:
            raise ValueError("partition key %r: an object or array value is not supported here" % key)
        return zlib.crc32(text.encode("utf-8")) % n
    return None


def load_key(environ=os.environ):
    """(kid, key) of the active key, from the auditproc keyring environment."""
    text = environ.get("AUDITPROC_HMAC_KEYS", "")
    path = environ.get("AUDITPROC_HMAC_KEYS_FILE", "")
    if bool(text) == bool(path):
        raise ValueError("set exactly one of AUDITPROC_HMAC_KEYS and AUDITPROC_HMAC_KEYS_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    active, keys = None, {}
    for number, line in enumerate(text.replace(";", "\n").split("\n"), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "active" and len(words) == 2:
            active = words[1]
        elif words[0] == "key" and len(words) == 3 and words[2].startswith("hex:"):
            try:
                keys[words[1]] = bytes.fromhex(words[2][4:])
            except ValueError:
                raise ValueError("keyring line %d: key %r is not valid hex" % (number, words[1])) from None
        else:
            # Never echo the line: it may hold a key.
            raise ValueError("keyring line %d: want 'key <id> hex:<key>' or 'active <id>'" % number)
    active = environ.get("AUDITPROC_HMAC_ACTIVE_KEY") or active
    if active is None and len(keys) == 1:
        active = next(iter(keys))
    if active not in keys:
        raise ValueError("no active key: name one with an 'active <id>' line or AUDITPROC_HMAC_ACTIVE_KEY")
    return active, keys[active]


def check_vectors(path):
    """Recompute every vector's MAC; return the number of problems found."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    keys = {kid: bytes.fromhex(h) for kid, h in doc["keys"].items()}
    problems = 0
    for v in doc["vectors"]:
        if "mac_input_hex" not in v:
            continue
        fields = v["fields"]
        event = fields["event"].encode("utf-8")
        if fields.get("v") == VERSION2:
            data = mac_input2(fields["kid"], v["stream"], fields["src"], fields["seq"], fields["prev"],
                              fields["kind"], event)
        else:
            data = mac_input(fields["kid"], v["stream"], event)
        if data.hex() != v["mac_input_hex"]:
            print("vector %r: MAC input differs" % v["name"], file=sys.stderr)
            problems += 1
        expected = hmac.new(keys[fields["kid"]], data, hashlib.sha256).hexdigest()
        matches = hmac.compare_digest(expected, fields["sig"])
        if matches != (v["expect"] in ("ok", "malformed_envelope")):
            print("vector %r: sig match %s, expected %s" % (v["name"], matches, v["expect"]), file=sys.stderr)
            problems += 1
        if v["expect"] == "ok" and json.loads(event)["event_id"] != v["event_id"]:
            print("vector %r: event_id differs" % v["name"], file=sys.stderr)
            problems += 1
    print("checked %d vectors, %d problems" % (len(doc["vectors"]), problems))
    return problems


def chain_lines(name, stream, lines):
    """Sign each input line as the next entry of a new chain; end with the
    closing checkpoint. Returns the list of field objects, in order."""
    kid, key = load_key()
    chain = Chain(key, kid, name)
    out = []
    for line in lines:
        if not line.strip():
            continue
        event, _ = stamp(line.rstrip(b"\r\n"))
        out.append(chain.sign(stream, event))
        out.extend(chain.due())
    out.extend(chain.close())
    return out


def main(argv):
    if len(argv) == 3 and argv[1] == "--check-vectors":
        return 1 if check_vectors(argv[2]) else 0
    if len(argv) == 4 and argv[1] == "--shard-of":
        try:
            for line in sys.stdin.buffer.read().splitlines():
                if line.strip():
                    k = shard_of(line, argv[3], int(argv[2]))
                    print("-" if k is None else k)
        except ValueError as err:
            print("audit_sign: %s" % err, file=sys.stderr)
            return 1
        return 0
    if len(argv) == 4 and argv[1] == "--chain":
        try:
            entries = chain_lines(argv[2], argv[3], sys.stdin.buffer.readlines())
        except (ValueError, OSError) as err:
            print("audit_sign: %s" % err, file=sys.stderr)
            return 1
        for fields in entries:
            print(json.dumps(fields, ensure_ascii=False))
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        kid, key = load_key()
        event, _ = stamp(sys.stdin.buffer.read())
        fields = sign(key, kid, argv[1], event)
    except (ValueError, OSError) as err:
        print("audit_sign: %s" % err, file=sys.stderr)
        return 1
    print(json.dumps(fields, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
