#!/usr/bin/env bash
# The chaos runs of CI (`make chaos-ci`, after `make test`): the checker's
# self-test, three fixed seeds that together fire every fault kind, and one
# random seed (printed, so a failure can be replayed). Each run's report is
# printed; the first failure fails the script, after the other runs.
#
# One exception, stated in docs/reliability.md: a run whose only violation is
# C2 (an answer later than SLA + margin) is run once more with the same seed,
# and passes if that run passes. Two shared cores run the debug build, nine
# redis-servers, two serves, the replayer and the terminals (load 5-7): a
# scheduling stall at one instant can make C2 fail at random. A C2 failure
# that comes back with the same faults at the same times still fails CI; a
# money invariant (N1-N5, C1), C3 or R1 is never run again.
set -uo pipefail
cd "$(dirname "$0")/../.."
seconds=${CHAOS_CI_SECONDS:-90}
# C2's margin over the 100 ms SLA: the checker's default, as in `make chaos`.
margin=${CHAOS_CI_SLA_MARGIN_MS:-150}
out=$(mktemp -d /tmp/chaos-ci.XXXXXX)
python3 scripts/chaos/chaos.py selftest || exit 1
random_seed=$(( (RANDOM << 15) | RANDOM ))
random_profile=$([ $((random_seed % 2)) -eq 0 ] && echo S || echo C)
echo "chaos: random seed $random_seed on profile $random_profile"
status=0
# Runs one profile and seed into $out/NAME; prints its report; returns its exit code.
run_one() {
    python3 scripts/chaos/chaos.py run --profile "$1" --seed "$2" --seconds "$seconds" --sla-margin-ms "$margin" \
        --out "$out/$3" > "$out/$3.log" 2>&1
    local code=$?
    sed -n '/^chaos run: /,$p' "$out/$3.log"
    return "$code"
}
# True when the run's only failing invariant is C2.
only_c2_failed() {
    local failed
    failed=$(grep -oE '^  [A-Z][0-9] +FAIL' "$out/$1.log" | awk '{ print $1 }' | sort -u | tr '\n' ' ')
    [ "$failed" = "C2 " ]
}
for run in "S 101" "C 202" "C 303" "$random_profile $random_seed"; do
    set -- $run
    echo "chaos: profile $1 seed $2, $seconds s (python3 scripts/chaos/chaos.py replay $out/$1-$2 to replay)"
    run_one "$1" "$2" "$1-$2"
    code=$?
    if [ "$code" -eq 1 ] && only_c2_failed "$1-$2"; then
        echo "chaos: profile $1 seed $2: only C2 failed (late answers; issue 19): running the same seed once more"
        run_one "$1" "$2" "$1-$2-again"
        code=$?
        [ "$code" -eq 0 ] && echo "chaos: profile $1 seed $2 passed when run again; the first run's C2 is reported above"
    fi
    if [ "$code" -ne 0 ]; then
        echo "chaos: profile $1 seed $2 FAILED (exit $code); its directory: $out/$1-$2"
        tail -40 "$out/$1-$2.log"
        status=1
    fi
done
[ "$status" -eq 0 ] && rm -rf "$out"
exit "$status"
