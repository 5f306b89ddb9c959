"""The human report of a checked run (DIR/report.txt and stdout)."""
from collections import Counter

from checker import fault_window

NAMES = {
    "N1": "no net debit for a declined, unanswered-and-reversed or terminal-reversed id",
    "N2": "no credit without its debit, never a net credit",
    "N3": "at most one debit and one credit per id (streams and SQLite)",
    "N4": "SQLite equals the streams; audit passed",
    "N5": "balance = initial - standing debits; none negative",
    "C1": "every 00 has exactly one standing debit",
    "C2": "every answer within SLA + margin, none missing",
    "C3": "approvals resume after each heal; no reversal owed at the end",
    "R1": "a repeated id gets its first code",
}


def percentile(values, q):
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def _faults_section(schedule):
    lines = ["faults (kind: fired / planned):"]
    planned, fired, failovers = Counter(), Counter(), 0
    for f in schedule:
        planned[f["kind"]] += 1
        if f.get("fired") is not None:
            fired[f["kind"]] += 1
        failovers += 1 if f.get("failover") else 0
    for kind in sorted(planned):
        lines.append(f"  {kind:20s} {fired[kind]} / {planned[kind]}")
    problems = [f for f in schedule if not str(f.get("status", "")).startswith("done") or ";" in str(f.get("status"))]
    for f in problems:
        lines.append(f"  #{f['n']} {f['kind']}: {f.get('status')}")
    lines.append(f"  failovers seen: {failovers}")
    return lines


def _answers_section(answers, result):
    requests = Counter(a["type"] for a in answers if a["outcome"] != "refused")
    codes = Counter((a["type"], a.get("code") or a["outcome"]) for a in answers)
    reasons = Counter(a.get("reason") for a in answers if a.get("code") == "07")
    lat = result["latencies"]
    lines = ["requests sent: " + ", ".join(f"{k} {v}" for k, v in sorted(requests.items())),
             "answers per code: " + ", ".join(f"{t}/{c} {n}" for (t, c), n in sorted(codes.items())),
             "07 reasons: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()),
             f"latency (terminal send -> answer): p50 {percentile(lat, .5) * 1000:.1f} ms, "
             f"p99 {percentile(lat, .99) * 1000:.1f} ms, max {max(lat, default=0) * 1000:.1f} ms "
             f"(SLA {result['sla_ms']} ms + margin {result['margin_ms']} ms)"]
    by_kind = Counter()
    for item in result["late"]:
        for name in item["faults"] or ["(no fault)"]:
            by_kind[name.split("#")[0]] += 1
    lines.append("answers over SLA+margin per fault kind: "
                 + (", ".join(f"{k} {n}" for k, n in by_kind.most_common()) or "none"))
    lines.append(f"requests without an answer from a serve that was up: {len(result['unanswered'])}")
    return lines


def _reversals_section(answers, final, schedule, result):
    metrics = final.get("metrics", {})
    timeouts = sum(1 for a in answers if a["type"] == "authorization" and a.get("code") == "07"
                   and a.get("reason") == "timeout")
    journal = [f.get("journal_owed") for f in schedule if f.get("journal_owed")]
    return [f"reversals: 07 timeout authorizations (each journaled) {timeouts}; "
            f"self-reversals applied (metric) {metrics.get('reversals_applied', 0):.0f}; "
            f"timeout/ entries in the ledger {result['self_reversals_in_ledger']}; "
            f"unreplicated decisions (metric) {metrics.get('unreplicated_decisions', 0):.0f}",
            f"redirects (metric): moved {metrics.get('redirects_moved', 0):.0f}, ask {metrics.get('redirects_ask', 0):.0f}, "
            f"tryagain {metrics.get('redirects_tryagain', 0):.0f}" + (f"; journals at kills: {journal}" if journal else "")]


def _invariants_section(result):
    lines = ["invariants (violations):"]
    for name, text in NAMES.items():
        found = result["violations"][name]
        flag = "FAIL" if name in result["fatal"] else ("note" if found else "ok")
        lines.append(f"  {name} {flag:4s} {len(found):5d}  {text}{_r1_split(found) if name == 'R1' else ''}")
        for item in found[:8]:
            extra = f" faults={item['faults']}" if item.get("faults") else ""
            when = f"t={item['t']:.3f} " if isinstance(item.get("t"), (int, float)) else ""
            lines.append(f"        {when}{item.get('id', '')} {item.get('account', '')}: {item['what']}{extra}")
        if len(found) > 8:
            lines.append(f"        ... and {len(found) - 8} more")
    c1 = "lost approvals: %d%s" % (result["lost_approvals"], " (reported only: --replica-acks 0)" if result["lenient_c1"] else "")
    lines.append(c1)
    lines.append(f"ids with no known outcome (never answered, reversal not acknowledged): {len(result['unresolved'])}")
    lines.append(f"C3 heals too close to the end to judge: {result['c3_inconclusive']}")
    return lines


def _r1_split(found):
    """Repeats answered without a decision (07 timeout / storage unavailable) vs a different decision."""
    if not found:
        return ""
    stalled = sum(1 for v in found if "07 timeout" in v["what"] or "storage unavailable" in v["what"])
    return f" ({stalled} answered 07 timeout/storage unavailable, {len(found) - stalled} another decision)"


def _coverage_section(result):
    lines = ["coverage:"]
    for name, value in result["coverage"].items():
        lines.append(f"  {'ok ' if value else 'MISSING'} {name}: {value:g}" if isinstance(value, (int, float))
                     else f"  {name}: {value}")
    for note in result.get("notes", []):
        lines.append(f"  note: {note}")
    return lines


def timeline(run, result, window=2.0):
    v = result["first_violation"]
    if v is None or not isinstance(v.get("t"), (int, float)):
        return []
    t = v["t"]
    schedule = run["schedule"].get("faults", [])
    lines = [f"first violation ({v['invariant']}) at t={t:.3f}: {v.get('id', '')} {v.get('account', '')}: {v['what']}",
             f"timeline t={t - window:.3f} .. {t + window:.3f} (faults, the account's requests; * the id's own, at any time):"]
    events = []
    for f in schedule:
        w = fault_window(f)
        if w and w[0] - window <= t <= w[1] + window:
            events.append((w[0], f"FAULT {f['kind']}#{f['n']} on {f.get('target')} fired "
                                 f"(end {f.get('end')}, settled {f.get('settled')})"))
    near = [a for a in run["answers"] if abs(a["t_send"] - t) <= window and a["account"] == v.get("account")]
    near = sorted(near, key=lambda a: abs(a["t_send"] - t))[:40]
    mine = [a for a in run["answers"] if v.get("id") and v["id"] in (a["id"], a.get("original"))]
    for a in {id(a): a for a in near + mine}.values():
        recv = f"{a['t_recv']:.3f}" if a.get("t_recv") is not None else "-"
        mark = "*" if a in mine else " "
        events.append((a["t_send"], f"{mark}{a['type']:13s} {a['id']} {a['role']} acct={a['account']} serve={a.get('serve')} "
                                    f"-> {a.get('code') or a['outcome']} {a.get('reason') or ''} (recv {recv})"))
    for when, text in sorted(events):
        lines.append(f"  {when:9.3f} {text}")
    related = [e for e in run["ledger"] if v.get("id") and v["id"] in (e["fields"].get("id"), e["fields"].get("original"))]
    for e in related[:10]:
        lines.append(f"  ledger {e['stream']} {e['entry_id']} @{e.get('node')}: {e['fields']}")
    return lines


def render(run, result, directory):
    final, answers = run["final"], run["answers"]
    schedule = run["schedule"].get("faults", [])
    build = run["schedule"].get("build") or {}
    head = [f"chaos run: profile {final.get('profile')} seed {final.get('seed')} commit {run['schedule'].get('commit', '?')[:12]} "
            f"(binary {build.get('binary', '?')}, built {build.get('mtime', '?')}, sha256 {build.get('sha256', '?')[:12]}) "
            f"replica-acks {final.get('replica_acks')} terminals {final.get('terminals')} seconds {final.get('seconds')}",
            f"ledger entries {result['ledger_entries']}, SQLite rows {result['sqlite_rows']}, "
            f"audit exit {final.get('audit', {}).get('rc')}, load average at the end {final.get('loadavg_end', ['?'])[0]}"]
    verdict = {0: "PASSED", 1: "FAILED (violation)", 3: "VACUOUS (coverage missing: " + ", ".join(result["missing"]) + ")"}
    lines = (head + _faults_section(schedule) + _answers_section(answers, result)
             + _reversals_section(answers, final, schedule, result) + _invariants_section(result)
             + _coverage_section(result) + timeline(run, result)
             + [f"result: {verdict[result['exit']]} (exit {result['exit']})",
                f"replay: python3 scripts/chaos/chaos.py replay {directory}",
                f"check again: python3 scripts/chaos/chaos.py check {directory}"])
    return "\n".join(lines) + "\n"
