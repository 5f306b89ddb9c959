#!/usr/bin/env bash
# The chaos runs of CI (`make chaos-ci`, after `make test`): the checker's
# self-test, three fixed seeds that together fire every fault kind, and one
# random seed (printed, so a failure can be replayed). Each run's report is
# printed; the first failure fails the script, after the other runs.
set -uo pipefail
cd "$(dirname "$0")/../.."
seconds=${CHAOS_CI_SECONDS:-90}
out=$(mktemp -d /tmp/chaos-ci.XXXXXX)
python3 scripts/chaos/chaos.py selftest || exit 1
random_seed=$(( (RANDOM << 15) | RANDOM ))
random_profile=$([ $((random_seed % 2)) -eq 0 ] && echo S || echo C)
echo "chaos: random seed $random_seed on profile $random_profile"
status=0
for run in "S 101" "C 202" "C 303" "$random_profile $random_seed"; do
    set -- $run
    echo "chaos: profile $1 seed $2, $seconds s (python3 scripts/chaos/chaos.py replay $out/$1-$2 to replay)"
    python3 scripts/chaos/chaos.py run --profile "$1" --seed "$2" --seconds "$seconds" --out "$out/$1-$2" \
        > "$out/$1-$2.log" 2>&1
    code=$?
    sed -n '/^chaos run: /,$p' "$out/$1-$2.log"
    if [ "$code" -ne 0 ]; then
        echo "chaos: profile $1 seed $2 FAILED (exit $code); its directory: $out/$1-$2"
        tail -40 "$out/$1-$2.log"
        status=1
    fi
done
[ "$status" -eq 0 ] && rm -rf "$out"
exit "$status"
