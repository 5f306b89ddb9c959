"""The end of a run: the state the checker reads.

- every entry of every ledger stream (`statements` on one Redis,
  `statements:{T}` found with SCAN on every master of a cluster) to
  DIR/ledger.jsonl, one JSON object per entry;
- the replayer's SQLite rows, the initial and final balances of every
  account, the audit's exit status and the runner's facts to DIR/final.json.
"""
import json
import sqlite3
from pathlib import Path

from topology import keyslot

SQLITE_COLUMNS = ("stream", "entry_id", "type", "txn_id", "account", "code", "amount_cents",
                  "debits", "credits", "original", "reason")


def stream_names(topo, node):
    if topo.profile == "S":
        return ["statements"]
    names, cursor = set(), 0
    while True:
        cursor, keys = node.client().execute_command("SCAN", cursor, "MATCH", "statements*", "COUNT", 1000,
                                                     "TYPE", "stream")
        names.update(keys)
        if int(cursor) == 0:
            return sorted(names)


def read_stream(node, stream):
    entries, start = [], "-"
    while True:
        batch = node.client().execute_command("XRANGE", stream, start, "+", "COUNT", 1000)
        if not batch:
            return entries
        for entry_id, fields in batch:
            if isinstance(fields, list):
                fields = dict(zip(fields[::2], fields[1::2]))
            entries.append({"stream": stream, "entry_id": entry_id, "fields": fields})
        start = "(" + batch[-1][0]


def dump_ledger(topo, path):
    """Writes every stream entry of every master; returns how many."""
    count = 0
    with open(path, "w") as out:
        for node in topo.masters():
            for stream in stream_names(topo, node):
                for entry in read_stream(node, stream):
                    entry["node"] = node.addr
                    out.write(json.dumps(entry, sort_keys=True) + "\n")
                    count += 1
    return count


def read_sqlite(db):
    if not Path(db).exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(f"SELECT {', '.join(SQLITE_COLUMNS)} FROM statements").fetchall()
    finally:
        conn.close()
    return [dict(zip(SQLITE_COLUMNS, row)) for row in rows]


def read_balances(topo):
    """account -> {category: cents} from the node serving each account now."""
    balances = {}
    for account in topo.accounts:
        key = "account:{" + account["id"] + "}"
        node = topo.nodes[0] if topo.profile == "S" else topo.slot_owner(keyslot(account["id"]))
        values = node.call("HGETALL", key) if node is not None else None
        balances[account["id"]] = {k: int(v) for k, v in (values or {}).items()}
    return balances


def to_cents(text):
    whole, _, frac = text.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def initial_balances(accounts):
    return {a["id"]: {c: to_cents(v) for c, v in a["set"].items()} for a in accounts}


def read_journals(topo):
    return {serve.index: sorted(" ".join(pair) for pair in serve.owed()) for serve in topo.serves}
