"""The invariants of a chaos run, checked over its recorded files only.

Inputs (in the run directory): answers.jsonl (every terminal attempt),
ledger.jsonl (every Redis stream entry at the end), final.json (SQLite rows,
initial and final balances, audit status, metric totals, journals left),
schedule.json (the faults and when they fired and healed). No Redis.

Money invariants (always fatal):
  N1  an id answered 51/07, never answered and then reversed, or reversed
      by its terminal, leaves no net debit
  N2  every credit matches a debit of its original (same categories, same
      amounts): no credit without debit, never a net credit
  N3  at most one debit and one credit per id, in the streams and in SQLite
  N4  SQLite equals the streams entry by entry; the audit exited 0
  N5  every balance = initial - debits + credits of the ledger; none negative
Service invariants:
  C1  every id whose last answer is 00 (not reversed by its terminal) has
      exactly one standing debit, and every 00 ever answered has its debit in
      the ledger (lost approvals; not fatal with --replica-acks 0 on C)
  C2  every answer within the SLA + margin; no request unanswered by a
      serve that was up
  C3  after each heal an approval for an affected account comes within the
      bound; the serves owe no reversal at the end
  R1  a repeated id gets the code of its first answer, or a 07 that is no
      decision of its own: timeout / storage unavailable (the service then
      reverses the id) or "reversed" (an approval reversed since)

The outcome of an id is its terminal's last answer: a 07 timeout of a repeat
of an approval reverses that approval (the service's own reversal), so the
books must agree with the last answer, never with an earlier one.
"""
import json
from collections import defaultdict
from pathlib import Path

FATAL_ALWAYS = ("N1", "N2", "N3", "N4", "N5", "C2", "C3", "R1")
# 07 answers that are no decision of their own (see R1).
NOT_A_DECISION = ("timeout", "authorizer storage unavailable", "account busy", "reversed")
SERVE_FAULTS = ("serve_kill", "serve_kill_owed")


# --------------------------------------------------------------- loading

def read_jsonl(path):
    path = Path(path)
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_run(directory):
    d = Path(directory)
    return {
        "answers": read_jsonl(d / "answers.jsonl"),
        "ledger": read_jsonl(d / "ledger.jsonl"),
        "final": json.loads((d / "final.json").read_text()),
        "schedule": json.loads((d / "schedule.json").read_text()),
    }


def parse_amounts(text):
    """'FOOD:700,CASH:300' -> {'FOOD': 700, 'CASH': 300}."""
    result = {}
    for part in (text or "").split(","):
        if ":" in part:
            category, _, cents = part.partition(":")
            result[category] = result.get(category, 0) + int(cents)
    return result


def from_stream(entry):
    f = entry["fields"]
    return {"stream": entry["stream"], "entry_id": entry["entry_id"], "type": f.get("type", ""),
            "id": f.get("id", ""), "account": f.get("account", ""), "code": f.get("code", ""),
            "amount": int(f.get("amount") or 0), "debits": f.get("debits", ""), "credits": f.get("credits", ""),
            "original": f.get("original", ""), "reason": f.get("reason", "")}


def from_sqlite(row):
    return {"stream": row["stream"], "entry_id": row["entry_id"], "type": row["type"], "id": row["txn_id"],
            "account": row["account"], "code": row["code"], "amount": int(row["amount_cents"] or 0),
            "debits": row["debits"] or "", "credits": row["credits"] or "", "original": row["original"] or "",
            "reason": row["reason"] or ""}


def entry_ms(entry):
    return int(entry["entry_id"].split("-")[0])


# --------------------------------------------------------------- the books

class Books:
    """Debits and credits per (account, id), from one copy of the ledger."""

    def __init__(self, entries):
        self.entries = entries
        self.debits = defaultdict(list)    # (account, id) -> authorization 00 entries that debited
        self.credits = defaultdict(list)   # (account, original) -> reversal 00 entries that credited
        self.sets = defaultdict(list)
        self.reversals = defaultdict(list)  # (account, reversal id) -> its entries, whatever they did
        for e in entries:
            if e["type"] == "reversal":
                self.reversals[(e["account"], e["id"])].append(e)
            key = (e["account"], e["id"])
            if e["type"] == "authorization" and e["code"] == "00" and e["debits"]:
                self.debits[key].append(e)
            elif e["type"] == "reversal" and e["code"] == "00" and e["credits"]:
                self.credits[(e["account"], e["original"])].append(e)
            elif e["type"] == "set":
                self.sets[e["account"]].append(e)

    def net(self, account, txn):
        """Cents still debited for an id (debits minus credits back)."""
        debited = sum(sum(parse_amounts(e["debits"]).values()) for e in self.debits.get((account, txn), []))
        credited = sum(sum(parse_amounts(e["credits"]).values()) for e in self.credits.get((account, txn), []))
        return debited - credited

    def crediting(self, account, txn):
        return [e["id"] for e in self.credits.get((account, txn), [])]


def check_n2_n3(books, where):
    n2, n3 = [], []
    for (account, txn), entries in books.debits.items():
        if len(entries) > 1:
            n3.append({"id": txn, "account": account, "where": where,
                       "what": f"{len(entries)} debits", "entries": [e["entry_id"] for e in entries]})
    for (account, original), credits in books.credits.items():
        if len(credits) > 1:
            n3.append({"id": original, "account": account, "where": where,
                       "what": f"{len(credits)} credits", "entries": [e["entry_id"] for e in credits]})
        debits = books.debits.get((account, original), [])
        if not debits:
            n2.append({"id": original, "account": account, "where": where, "what": "credit without debit",
                       "entries": [e["entry_id"] for e in credits]})
            continue
        debited = defaultdict(int)
        for e in debits:
            for c, v in parse_amounts(e["debits"]).items():
                debited[c] += v
        for c, v in parse_amounts(credits[0]["credits"]).items():
            if v != debited.get(c, 0):
                n2.append({"id": original, "account": account, "where": where,
                           "what": f"credit {c}:{v} does not match debit {c}:{debited.get(c, 0)}",
                           "entries": [e["entry_id"] for e in credits + debits]})
        credited = defaultdict(int)
        for e in credits:
            for c, v in parse_amounts(e["credits"]).items():
                credited[c] += v
        if any(credited[c] > debited.get(c, 0) for c in credited):
            n2.append({"id": original, "account": account, "where": where, "what": "net credit",
                       "entries": [e["entry_id"] for e in credits + debits]})
    return n2, n3


def check_n4(stream_entries, sqlite_entries, audit):
    keys = ("type", "id", "account", "code", "amount", "debits", "credits", "original")
    in_stream = {(e["stream"], e["entry_id"]): e for e in stream_entries}
    in_sqlite = {(e["stream"], e["entry_id"]): e for e in sqlite_entries}
    found = []
    for key, e in in_stream.items():
        row = in_sqlite.get(key)
        if row is None:
            found.append({"id": e["id"], "account": e["account"], "what": f"entry {key[0]} {key[1]} missing from SQLite"})
        elif any(row[k] != e[k] for k in keys):
            diff = {k: (e[k], row[k]) for k in keys if row[k] != e[k]}
            found.append({"id": e["id"], "account": e["account"], "what": f"entry {key[1]} differs: {diff}"})
    for key, row in in_sqlite.items():
        if key not in in_stream:
            found.append({"id": row["id"], "account": row["account"],
                          "what": f"SQLite row {key[0]} {key[1]} ({row['type']} {row['code']} "
                                  f"{row['debits'] or row['credits']}) not in the streams"})
    if audit.get("rc") != 0:
        found.append({"id": "", "account": "", "what": f"authorizer audit exited {audit.get('rc')}: "
                      + " | ".join((audit.get("output") or "").strip().splitlines()[-4:])})
    return found


def check_n5(books, initial, final):
    found = []
    expected = {a: dict(v) for a, v in initial.items()}
    for e in books.entries:
        if e["account"] not in expected:
            continue
        if e["type"] == "authorization" and e["code"] == "00":
            for c, v in parse_amounts(e["debits"]).items():
                expected[e["account"]][c] = expected[e["account"]].get(c, 0) - v
        elif e["type"] == "reversal" and e["code"] == "00":
            for c, v in parse_amounts(e["credits"]).items():
                expected[e["account"]][c] = expected[e["account"]].get(c, 0) + v
    for account, cats in expected.items():
        have = final.get(account, {})
        for c in sorted(set(cats) | set(have)):
            if have.get(c) != cats.get(c):
                found.append({"id": "", "account": account,
                              "what": f"{c}: balance {have.get(c)} but initial - debits + credits = {cats.get(c)}"})
            if (have.get(c) or 0) < 0:
                found.append({"id": "", "account": account, "what": f"{c}: negative balance {have.get(c)}"})
    return found


# --------------------------------------------------------------- answers

def by_id(answers):
    """id -> its authorization attempts; original -> reversal attempts."""
    auths, reversals = defaultdict(list), defaultdict(list)
    for a in answers:
        if a["type"] == "authorization":
            auths[a["id"]].append(a)
        elif a["type"] == "reversal":
            reversals[a["original"]].append(a)
    return auths, reversals


def id_outcomes(answers):
    """Per authorization id: what its terminal was told and did."""
    auths, reversals = by_id(answers)
    result = {}
    for txn, attempts in auths.items():
        told = sorted((a for a in attempts if a["outcome"] == "answer" and a["role"] != "repeat"),
                      key=lambda a: a["t_recv"])
        every = sorted((a for a in attempts if a["outcome"] == "answer"), key=lambda a: a["t_recv"])
        revs = reversals.get(txn, [])
        result[txn] = {
            "account": attempts[0]["account"],
            "amount": attempts[0].get("amount"),
            "codes": [a["code"] for a in told],
            "first": told[0] if told else None,
            "last": every[-1] if every else None,
            "ever_approved": any(a["code"] == "00" for a in every),
            "repeats": [a for a in attempts if a["role"] == "repeat" and a["outcome"] == "answer"],
            "terminal_reversed": any(r["code"] == "00" and r.get("purpose") == "terminal" for r in revs),
            "no_answer_reversed": any(r["code"] == "00" and r.get("purpose") == "no_answer" for r in revs),
            # A reversal sent because a repeat went unanswered comes after the
            # id's answers: it, not the earlier answers, is the outcome.
            "no_answer_after_answers": any(r.get("purpose") == "no_answer" and every
                                           and r["t_send"] > every[-1]["t_recv"] for r in revs),
            "reversal_ids": sorted({r["id"] for r in revs if r["code"] == "00"}),
            "reversal_tried": bool(revs),
            "t": (told[0]["t_recv"] if told else attempts[0]["t_send"]),
            "t_last": max(a["t_send"] for a in attempts + revs),
            "history": ", ".join(f"{a['role']} {a.get('code') or a['outcome']}{' ' + a['reason'] if a.get('reason') else ''}"
                                 for a in sorted(attempts, key=lambda a: a["t_send"])),
        }
    return result


def check_ids(outcomes, books):
    n1, c1, r1, unresolved = [], [], [], []
    for txn, o in outcomes.items():
        net = books.net(o["account"], txn)
        base = {"id": txn, "account": o["account"], "t": o["t_last"]}
        if o["first"] is not None:
            for rep in o["repeats"]:
                if rep["code"] != o["first"]["code"] and o["first"]["code"] in ("00", "51") \
                        and not (rep["code"] == "07" and rep.get("reason") in NOT_A_DECISION):
                    r1.append(dict(base, t=rep["t_send"], what=f"repeat answered {rep['code']} {rep.get('reason') or ''}"
                                   f" but the first answer was {o['first']['code']}"))
        if o["ever_approved"] and not books.debits.get((o["account"], txn)):
            c1.append(dict(base, what="answered 00 but no debit in the ledger (lost approval)"))
            continue
        last = o["last"]
        if o["no_answer_after_answers"]:
            if not o["no_answer_reversed"]:
                unresolved.append(dict(base, what=f"a repeat unanswered, its reversal not acknowledged ({net} cents debited)"))
            elif net != 0:
                n1.append(dict(base, what=f"a repeat unanswered, reversed, but {net} cents debited; " + reversal_fate(books, o)))
        elif o["terminal_reversed"]:
            if net != 0:
                n1.append(dict(base, what=f"reversed by its terminal but {net} cents still debited; "
                                          + reversal_fate(books, o)))
        elif last is not None and last["code"] == "00":
            if not one_standing_debit(books, o, txn):
                c1.append(dict(base, what=lost_approval_cause(books, o, txn, net)))
        elif last is not None:
            if net != 0:
                n1.append(dict(base, what=f"last answered {last['code']} {last.get('reason') or ''} but {net} cents debited"
                                          f" (answers: {o['history']})"))
        elif o["no_answer_reversed"]:
            if net != 0:
                n1.append(dict(base, what=f"never answered, reversed, but {net} cents debited; " + reversal_fate(books, o)))
        else:
            unresolved.append(dict(base, what=f"never answered, reversal not acknowledged ({net} cents debited)"))
    return n1, c1, r1, unresolved


def one_standing_debit(books, o, txn):
    key = (o["account"], txn)
    debits = books.debits.get(key, [])
    if len(debits) != 1 or books.credits.get(key):
        return False
    return o["amount"] is None or sum(parse_amounts(debits[0]["debits"]).values()) == to_cents(o["amount"])


def to_cents(text):
    whole, _, frac = str(text).partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def reversal_fate(books, o):
    """What became of the reversals a terminal was told were done."""
    parts = []
    for rid in o["reversal_ids"]:
        entries = books.reversals.get((o["account"], rid), [])
        if not entries:
            parts.append(f"{rid} answered 00 but is not in the ledger (an acknowledged write lost)")
        else:
            parts.append(f"{rid} in the ledger: code {entries[0]['code']}, credits '{entries[0]['credits']}', "
                         f"reason '{entries[0]['reason']}'")
    return "; ".join(parts) or "no reversal answered 00"


def lost_approval_cause(books, o, txn, net):
    debits = books.debits.get((o["account"], txn), [])
    if not debits:
        return "answered 00 but no debit in the ledger (lost approval)"
    by = books.crediting(o["account"], txn)
    if by:
        return f"answered 00 but credited back by {', '.join(by)} ({net} cents standing; answers: {o['history']})"
    return f"answered 00 with {len(debits)} debits ({net} cents standing; answers: {o['history']})"


# --------------------------------------------------------------- time

def fault_window(fault):
    start = fault.get("fired")
    end = fault.get("settled") or fault.get("end") or start
    return (start, end) if start is not None else None


def active_faults(schedule, t0, t1, slack=0.0):
    names = []
    for f in schedule:
        w = fault_window(f)
        if w and w[0] - slack <= t1 and t0 <= w[1] + slack:
            names.append(f"{f['kind']}#{f['n']}")
    return names


def check_c2(answers, schedule, sla_ms, margin_ms):
    late, unanswered, latencies = [], [], []
    bound = (sla_ms + margin_ms) / 1000.0
    for a in answers:
        if a["outcome"] == "answer":
            latency = a["t_recv"] - a["t_send"]
            latencies.append(latency)
            if latency > bound:
                late.append({"id": a["id"], "account": a["account"], "t": a["t_send"], "latency_ms": round(latency * 1000, 1),
                             "faults": active_faults(schedule, a["t_send"], a["t_recv"], slack=0.1),
                             "what": f"answered {a['code']} in {latency * 1000:.0f} ms"})
        elif a["outcome"] in ("timeout", "closed", "mismatched") and not serve_was_down(schedule, a):
            unanswered.append({"id": a["id"], "account": a["account"], "t": a["t_send"],
                               "faults": active_faults(schedule, a["t_send"], a["t_recv"] or a["t_send"], slack=0.1),
                               "what": f"{a['outcome']} from serve-{a['serve']} which was up"})
    return late, unanswered, latencies


def serve_was_down(schedule, attempt):
    for f in schedule:
        if f["kind"] in SERVE_FAULTS and f["params"].get("serve") == attempt.get("serve") and fault_window(f):
            start, end = fault_window(f)
            if start - 1.0 <= (attempt["t_recv"] or attempt["t_send"]) and attempt["t_send"] <= end + 1.0:
                return True
    return False


def check_c3(answers, schedule, bound_s, final):
    found, inconclusive = [], 0
    approvals = sorted((a["t_recv"], a["account"]) for a in answers
                       if a["outcome"] == "answer" and a["code"] == "00" and a["type"] == "authorization")
    last_send = max((a["t_send"] for a in answers), default=0.0)
    for f in schedule:
        accounts = set(f.get("accounts") or [])
        if not accounts or f.get("end") is None:
            continue
        healed = f["end"]
        if healed + bound_s > last_send:
            inconclusive += 1
            continue
        if not any(healed <= t <= healed + bound_s and acct in accounts for t, acct in approvals):
            found.append({"id": "", "account": ",".join(sorted(accounts))[:80], "t": healed,
                          "what": f"no approval for the accounts of {f['kind']}#{f['n']} within {bound_s:.0f} s of its heal"})
    owed = final.get("journal_owed_end") or {}
    for serve, entries in owed.items():
        if entries:
            found.append({"id": "", "account": "", "t": None,
                          "what": f"serve-{serve} still owes {len(entries)} reversals at the end: {entries[:5]}"})
    return found, inconclusive


# --------------------------------------------------------------- coverage

def coverage(run):
    final, answers, schedule = run["final"], run["answers"], run["schedule"]
    metrics = final.get("metrics", {})
    cluster = final.get("profile") == "C"
    faults = schedule.get("faults", [])
    items = {
        "07 timeout answer": sum(1 for a in answers if a.get("code") == "07" and a.get("reason") == "timeout"),
        "self-reversal applied (metric)": metrics.get("reversals_applied", 0),
        "serve restart with a non-empty journal": sum(1 for f in faults if (f.get("journal_owed") or 0) > 0),
        "replayer restart": sum(1 for f in faults if f["kind"] == "replayer_kill" and f.get("end") is not None),
    }
    if cluster:
        items["failover"] = sum(1 for f in faults if f.get("failover"))
        items["ASK/TRYAGAIN redirect (metric)"] = metrics.get("redirects_ask", 0) + metrics.get("redirects_tryagain", 0)
        if int(final.get("replica_acks", 0)) > 0:
            items["WAIT shortfall (metric)"] = metrics.get("unreplicated_decisions", 0)
    return {name: value for name, value in items.items()}


# --------------------------------------------------------------- all

def check(run, sla_ms=100, margin_ms=150, c3_bound_s=10.0):
    final, answers = run["final"], run["answers"]
    schedule = run["schedule"].get("faults", [])
    stream = [from_stream(e) for e in run["ledger"]]
    sqlite = [from_sqlite(r) for r in final.get("sqlite", [])]
    redis_books, sqlite_books = Books(stream), Books(sqlite)

    n2, n3 = check_n2_n3(redis_books, "redis")
    n2b, n3b = check_n2_n3(sqlite_books, "sqlite")
    outcomes = id_outcomes(answers)
    n1, c1, r1, unresolved = check_ids(outcomes, redis_books)
    late, unanswered, latencies = check_c2(answers, schedule, sla_ms, margin_ms)
    c3, c3_inconclusive = check_c3(answers, schedule, c3_bound_s, final)
    violations = {
        "N1": n1, "N2": n2 + n2b, "N3": n3 + n3b,
        "N4": check_n4(stream, sqlite, final.get("audit", {})),
        "N5": check_n5(redis_books, final.get("initial", {}), final.get("final", {})),
        "C1": c1, "C2": late + unanswered, "C3": c3, "R1": r1,
    }
    lenient_c1 = final.get("profile") == "C" and int(final.get("replica_acks", 1)) == 0
    fatal = [k for k, v in violations.items() if v and (k in FATAL_ALWAYS or (k == "C1" and not lenient_c1))]
    cov = coverage(run)
    missing = [name for name, value in cov.items() if not value]
    return {
        "violations": violations, "fatal": fatal, "lost_approvals": len(c1), "lenient_c1": lenient_c1,
        "unresolved": unresolved, "coverage": cov, "missing": missing,
        "latencies": latencies, "late": late, "unanswered": unanswered, "c3_inconclusive": c3_inconclusive,
        "sla_ms": sla_ms, "margin_ms": margin_ms, "c3_bound_s": c3_bound_s,
        "exit": 1 if fatal else (3 if missing else 0),
        "first_violation": first_violation(violations, fatal),
        "ledger_entries": len(stream), "sqlite_rows": len(sqlite),
        "self_reversals_in_ledger": sum(1 for e in stream if e["type"] == "reversal" and e["id"].startswith("timeout/")),
    }


def first_violation(violations, fatal):
    candidates = [(v.get("t") if v.get("t") is not None else float("inf"), name, v)
                  for name in fatal for v in violations[name]]
    if not candidates:
        return None
    t, name, v = min(candidates, key=lambda c: c[0])
    return dict(v, invariant=name)
