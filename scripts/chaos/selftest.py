"""The checker against tiny synthetic recordings (no Redis, < 1 s).

A clean recording must pass; each planted anomaly (a double debit, a lost
00, a late answer, a credit without debit, a 07 with a standing debit, an
unanswered repeat reversed but still debited, a SQLite row missing from the streams' copy) must be reported under the
invariant that names it and fail the run; a clean recording without the
coverage events is vacuous (exit 3).
"""
import copy
import json
import sys
import tempfile
from pathlib import Path

import checker

STREAM = "statements"


def entry(n, **fields):
    base = {"type": "authorization", "code": "00", "amount": "0", "debits": "", "credits": "", "original": "",
            "reason": "", "mcc": "", "merchant": ""}
    base.update(fields)
    return {"stream": STREAM, "entry_id": f"{1700000000000 + n}-0", "node": "127.0.0.1:1", "fields": base}


def answer(txn, account, t, code, *, kind="authorization", role="first", outcome="answer", latency=0.005,
           serve=0, reason=None, amount=None, **extra):
    record = {"id": txn, "type": kind, "role": role, "attempt": 0, "account": account, "terminal": 0, "serve": serve,
              "t_send": t, "t_recv": t + latency, "wall_send": 1.0e9 + t, "wall_recv": 1.0e9 + t + latency,
              "outcome": outcome, "code": code if outcome == "answer" else None, "reason": reason, "amount": amount}
    record.update(extra)
    return record


def sqlite_row(e):
    f = e["fields"]
    return {"stream": e["stream"], "entry_id": e["entry_id"], "type": f["type"], "txn_id": f["id"],
            "account": f["account"], "code": f["code"], "amount_cents": int(f["amount"]), "debits": f["debits"],
            "credits": f["credits"], "original": f["original"], "reason": f["reason"]}


def clean_run():
    ledger = [
        entry(1, type="set", id="setup-A", account="A", credits="FOOD:10000,MEAL:10000,CASH:10000"),
        entry(2, type="set", id="setup-B", account="B", credits="FOOD:10000,MEAL:10000,CASH:10000"),
        entry(3, id="x1", account="A", amount="1000", debits="FOOD:1000"),
        entry(4, id="x2", account="A", code="51", amount="999999"),
        entry(5, id="x3", account="B", amount="300", debits="MEAL:300"),
        entry(6, type="reversal", id="timeout/x3", account="B", original="x3", credits="MEAL:300"),
        entry(7, type="reversal", id="x4-rv", account="B", original="x4", reason="original not seen; tombstone left"),
        entry(8, id="x5", account="A", amount="1000", debits="FOOD:500,CASH:500"),
        entry(9, type="reversal", id="x5-tr", account="A", original="x5", credits="FOOD:500,CASH:500"),
        entry(10, id="x6", account="B", amount="200", debits="CASH:200"),
        entry(11, type="reversal", id="timeout/x6", account="B", original="x6", credits="CASH:200"),
    ]
    answers = [
        answer("x1", "A", 1.0, "00", amount="10.00"),
        answer("x1", "A", 1.5, "00", role="repeat", amount="10.00"),
        answer("x2", "A", 2.0, "51", amount="9999.99"),
        answer("x3", "B", 3.0, "07", reason="timeout", latency=0.095, amount="3.00"),
        answer("x4", "B", 4.0, None, outcome="closed", amount="1.00"),
        answer("x4", "B", 4.1, None, outcome="timeout", role="retry", latency=0.5, amount="1.00"),
        answer("x4-rv", "B", 4.7, "00", kind="reversal", original="x4", purpose="no_answer", serve=1),
        answer("x5", "A", 5.0, "00", amount="10.00"),
        answer("x5-tr", "A", 6.0, "00", kind="reversal", original="x5", purpose="terminal"),
        answer("b1", "A", 7.0, "00", kind="balance"),
        # x6: approved; a repeat of it unanswered (its serve answered 07 timeout
        # and reversed the approval, then died): the terminal retries, then reverses.
        answer("x6", "B", 7.5, "00", amount="2.00"),
        answer("x6", "B", 7.6, None, outcome="closed", role="repeat", amount="2.00"),
        answer("x6", "B", 7.7, None, outcome="timeout", role="repeat", attempt=1, latency=0.5, amount="2.00"),
        answer("x6", "B", 8.3, None, outcome="timeout", role="repeat", attempt=2, latency=0.5, amount="2.00"),
        answer("x6-rv", "B", 8.9, "00", kind="reversal", original="x6", purpose="no_answer", serve=1),
    ]
    faults = [
        {"n": 0, "kind": "serve_kill", "start": 3.9, "params": {"serve": 0}, "fired": 3.95, "end": 5.0,
         "settled": 5.0, "target": "serve-0", "accounts": [], "journal_owed": 1, "status": "done"},
        {"n": 1, "kind": "replayer_kill", "start": 6.0, "params": {"serve": 1}, "fired": 6.0, "end": 7.0,
         "settled": 7.0, "target": "replayer", "accounts": [], "status": "done"},
        {"n": 2, "kind": "serve_kill_owed", "start": 7.55, "params": {"serve": 0}, "fired": 7.55, "end": 9.0,
         "settled": 9.0, "target": "serve-0", "accounts": ["B"], "journal_owed": 1, "status": "done"},
    ]
    final = {
        "profile": "S", "seed": 1, "replica_acks": 0, "seconds": 8, "terminals": 1,
        "initial": {"A": {"FOOD": 10000, "MEAL": 10000, "CASH": 10000}, "B": {"FOOD": 10000, "MEAL": 10000, "CASH": 10000}},
        "final": {"A": {"FOOD": 9000, "MEAL": 10000, "CASH": 10000}, "B": {"FOOD": 10000, "MEAL": 10000, "CASH": 10000}},
        "sqlite": [sqlite_row(e) for e in ledger], "audit": {"rc": 0, "output": "audit passed"},
        "metrics": {"reversals_applied": 1}, "journal_owed_end": {"0": [], "1": []},
    }
    schedule = {"profile": "S", "seed": 1, "commit": "selftest", "sla_ms": 100, "margin_ms": 150, "faults": faults}
    return {"answers": answers, "ledger": ledger, "final": final, "schedule": schedule}


# --------------------------------------------------------------- plants

def drop_entry(run, txn, kind="authorization"):
    keep = [e for e in run["ledger"] if not (e["fields"]["id"] == txn and e["fields"]["type"] == kind)]
    gone = {e["entry_id"] for e in run["ledger"]} - {e["entry_id"] for e in keep}
    run["ledger"] = keep
    run["final"]["sqlite"] = [r for r in run["final"]["sqlite"] if r["entry_id"] not in gone]


def add_entry(run, e):
    run["ledger"].append(e)
    run["final"]["sqlite"].append(sqlite_row(e))


def plant_double_debit(run):
    add_entry(run, entry(20, id="x1", account="A", amount="1000", debits="FOOD:1000"))
    run["final"]["final"]["A"]["FOOD"] -= 1000


def plant_lost_approval(run):
    drop_entry(run, "x1")
    run["final"]["final"]["A"]["FOOD"] += 1000


def plant_late_answer(run):
    late = next(a for a in run["answers"] if a["id"] == "x2")
    late["t_recv"] = late["t_send"] + 0.400


def plant_credit_without_debit(run):
    add_entry(run, entry(21, type="reversal", id="y9-rv", account="B", original="y9", credits="CASH:700"))
    run["final"]["final"]["B"]["CASH"] += 700


def plant_declined_with_debit(run):
    drop_entry(run, "timeout/x3", kind="reversal")
    run["final"]["final"]["B"]["MEAL"] -= 300


def plant_unanswered_repeat_left_debited(run):
    drop_entry(run, "timeout/x6", kind="reversal")
    run["final"]["final"]["B"]["CASH"] -= 200


def plant_sqlite_mismatch(run):
    run["final"]["sqlite"] = [r for r in run["final"]["sqlite"] if r["txn_id"] != "x5-tr"]


def plant_no_coverage(run):
    run["final"]["metrics"]["reversals_applied"] = 0
    for f in run["schedule"]["faults"]:
        f["journal_owed"] = 0


CASES = [
    ("clean recording", None, None, 0),
    ("double debit", plant_double_debit, "N3", 1),
    ("lost 00", plant_lost_approval, "C1", 1),
    ("late answer", plant_late_answer, "C2", 1),
    ("credit without debit", plant_credit_without_debit, "N2", 1),
    ("07 with a standing debit", plant_declined_with_debit, "N1", 1),
    ("unanswered repeat reversed, still debited", plant_unanswered_repeat_left_debited, "N1", 1),
    ("SQLite/stream mismatch", plant_sqlite_mismatch, "N4", 1),
    ("no coverage events", plant_no_coverage, None, 3),
]


def write_run(directory, run):
    d = Path(directory)
    with open(d / "answers.jsonl", "w") as f:
        f.writelines(json.dumps(a) + "\n" for a in run["answers"])
    with open(d / "ledger.jsonl", "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in run["ledger"])
    (d / "final.json").write_text(json.dumps(run["final"]))
    (d / "schedule.json").write_text(json.dumps(run["schedule"]))


def journal_lines_are_read():
    """serve's journal lines, with and without the 07's time (µs): what
    the harness reads to know a killed serve owed reversals (coverage) and
    that every journal is empty at the end."""
    from topology import journal_owed
    with tempfile.TemporaryDirectory(prefix="chaos-selftest-") as tmp:
        path = Path(tmp) / "pending-reversals.log"
        path.write_text("A a1 t1 n0:0:7\nA a2 t2\nA a3 t3 100\nD a3 t3 100\n"
                        "A a4 t4 100\nA a4 t4 200\nD a4 t4 100\n")
        return journal_owed(path) == {("a1", "t1"), ("a2", "t2"), ("a4", "t4")}


def main():
    failures = 0
    ok = journal_lines_are_read()
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} journal lines are read (a later 07 outlives an earlier one's D)")
    for name, plant, invariant, expected in CASES:
        run = copy.deepcopy(clean_run())
        if plant:
            plant(run)
        with tempfile.TemporaryDirectory(prefix="chaos-selftest-") as tmp:
            write_run(tmp, run)
            result = checker.check(checker.load_run(tmp))
        flagged = [k for k, v in result["violations"].items() if v]
        ok = result["exit"] == expected and (invariant is None or invariant in result["fatal"])
        if plant is None or expected == 3:
            ok = ok and not flagged
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: exit {result['exit']} (want {expected}), flagged {flagged or 'nothing'}"
              + (f", want {invariant}" if invariant else ""))
    print(f"selftest: {len(CASES) + 1 - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
