#!/usr/bin/env bash
# Breaks each mechanism on purpose (scripts/mutations/NAME.patch, applied with
# `git apply`), runs the tests that should notice, and reports caught/missed.
# A mutation that no test catches is a promise without a test.
#
#   bash scripts/mutations.sh                 # every mutation
#   bash scripts/mutations.sh lock-removed    # some of them
#
# Not part of `make test`: each Swift mutation costs an incremental build.
# Needs a clean work tree (the patches apply to HEAD); the tree is restored
# after each mutation, also on Ctrl-C.
set -uo pipefail
cd "$(dirname "$0")/.."

# mutation -> XCTest filter of the tests that must fail under it
declare -A TESTS=(
  [lock-removed]='IntegrationTests.LockTests'
  [fifo-skipped]='IntegrationTests.LockTests'
  [unlock-plain-del]='IntegrationTests.LockTests'
  [no-keyevent-subscription]='IntegrationTests.(LockTests|SecurityTests)'
  [no-rules-publish]='IntegrationTests.AuthorizationTests'
  [no-idempotency-record]='IntegrationTests.(AuthorizationTests|PromiseTests)'
  [lock-never-kept]='IntegrationTests.LockTests'
  [inherited-lock-kept-by-the-last]='IntegrationTests.LockTests'
  [yesterday-bucket-not-read]='IntegrationTests.IdempotencyTests'
  [older-records-not-read]='IntegrationTests.IdempotencyTests'
  [fallback-instead-of-category]='IntegrationTests.AuthorizationTests'
  [answer-before-script]='IntegrationTests.AuthorizationTests'
  [ack-before-commit]='IntegrationTests.ReplayerPromiseTests|IntegrationTests.ClusterReplayTests/testKilledBetweenCommitAndAck'
  [audit-reads-database-once]='IntegrationTests.ReplayerPromiseTests/testAuditNext'
  [half-close-ignored]='IntegrationTests.PromiseTests'
  [listener-open-after-sigterm]='IntegrationTests.PromiseTests'
  [no-default-rules]='IntegrationTests.PromiseTests'
  [cr-split-refused]='IntegrationTests.PromiseTests'
  [txn-key-without-account]='IntegrationTests.PromiseTests'
  [no-read-backpressure]='IntegrationTests.PromiseTests'
  [reversal-no-tombstone]='IntegrationTests.ReversalTests'
  [reversal-credits-one-category]='IntegrationTests.ReversalTests'
  [reversal-ignores-own-record]='IntegrationTests.ReversalTests'
  [timeout-not-journaled]='IntegrationTests.SLATests'
  [journal-fsync-holds-back-writes]='AuthorizerServerTests.ReversalJournalTests'
  [fence-applies-what-the-master-lacks]='IntegrationTests.ReplicaFenceTests'
  [journal-earlier-ack-settles-later]='AuthorizerServerTests.ReversalJournalTests'
  [owed-reversal-ignores-heard]='IntegrationTests.CombinedFaultTests/testAnOwedReversalLetsStand'
  [repeat-does-not-raise-heard]='IntegrationTests.(AuthorizationTests/testRepeatedId|CombinedFaultTests/testAnOwedReversalLetsStand)'
  [owed-answer-waits-for-fsync]='AuthorizerServerTests.OwedAnswerTests'
  [control-window-in-utc]='IntegrationTests.ControlsTests'
  [reversal-keeps-window-counters]='IntegrationTests.ControlsTests'
  [control-limit-reached-at-the-limit]='IntegrationTests.ControlsTests'
  [control-counts-refusals]='IntegrationTests.ControlsTests'
  [program-controls-ignored]='IntegrationTests.ControlsTests/testProgramControls'
  [trailing-window-never-forgets]='IntegrationTests.ControlsTests/testATrailingWindow'
  [reversal-keeps-trailing-approval]='IntegrationTests.ControlsTests/testATrailingWindow'
  [order-line-record-skipped]='IntegrationTests.OrderTests'
  [freeze-not-checked]='IntegrationTests.FreezeTests'
  [revert-takes-more-than-unspent]='IntegrationTests.OrderTests/testARevert'
  [card-status-not-checked]='IntegrationTests.CardTests'
  [card-expiry-not-checked]='IntegrationTests.CardTests'
  [card-transition-out-of-final]='IntegrationTests.CardTests'
  [pan-shown-whole]='IntegrationTests.CardTests'
  [journal-not-replayed]='IntegrationTests.SLATests'
  [timeout-not-reversed]='IntegrationTests.SLATests'
  [lost-in-flight-not-reversed]='IntegrationTests.SLATests'
  [router-ignores-moved]='(RedisWireTests.RedirectMachineTests|IntegrationTests.ClusterRouterTests)'
  [lock-waits-on-the-first-node]='IntegrationTests.ClusterServeTests'
  [one-ledger-stream-on-a-cluster]='IntegrationTests.ClusterServeTests'
  [service-may-delete-the-ledger]='IntegrationTests.(SecurityTests|ClusterServeTests)'
  [replay-ignores-xadd-keyevents]='IntegrationTests.ClusterReplayTests/testRunningReplayerWakesOnXadd'
  [replay-sweeps-once]='IntegrationTests.ClusterReplayTests/testSweepFindsEntries'
  [cluster-replay-gives-up-on-failover]='IntegrationTests.ClusterFailoverTests'
  [wake-during-attempt-lost]='AuthorizerServerTests.JobStateMachineTests'
  [cluster-lag-reading-kept]='IntegrationTests.ClusterReplayTests/testServeExports'
  [statements-keyed-by-entry-id-alone]='IntegrationTests.(ClusterReplayTests/testDrainTakes|StatementStoreMigrationTests)'
  [iso-secondary-bitmap-read-as-field]='IntegrationTests.ISO8583Tests/testEcho'
  [iso-pan-lllvar]='IntegrationTests.ISO8583Tests/testInteroperabilityWithPyiso8583'
  [iso-unknown-card-05]='IntegrationTests.ISO8583Tests/testDeclined'
  [iso-no-statement-fields]='IntegrationTests.ISO8583Tests/testPurchaseApproved'
  [iso-frame-unbounded]='IntegrationTests.ISO8583Tests/testMalformed'
  [iso-malformed-not-answered]='IntegrationTests.ISO8583Tests/testMalformed'
  [iso-timeout-not-91]='IntegrationTests.ISO8583Tests/testRedisPaused'
  [iso-authorization-id-random]='IntegrationTests.ISO8583Tests/testRepeatIsIdempotent'
  [iso-reversal-of-stan]='IntegrationTests.ISO8583Tests/testReversal'
  [iso-no-read-backpressure]='IntegrationTests.ISO8583Tests/testPastTheInFlightLimit'
  [iso-sigterm-drops-in-flight]='IntegrationTests.ISO8583Tests/testSigterm'
  [iso-tls-ignored]='IntegrationTests.TLSTests/testISO8583'
  [retry-meets-dead-lock]='IntegrationTests.CombinedFaultTests/testARetryOfAnApprovedId'
  [reversal-retry-meets-dead-lock]='IntegrationTests.CombinedFaultTests/testARetryOfADecidedReversal'
  [busy-decline-not-recorded]='IntegrationTests.CombinedFaultTests/testABusyDecline'
  [unreplicated-reversal-done]='IntegrationTests.ReplicaAckTests'
  [replayer-commits-unreplicated]='IntegrationTests.ReplicaAckTests/testTheReplayer'
  [oom-owes-reversal]='IntegrationTests.ReplicaAckTests/testRedisAtMaxmemory'
  [owed-reversal-repeat-approved]='IntegrationTests.CombinedFaultTests/testATimedOutRepeat'
  [unreplicated-decline-answered]='IntegrationTests.ReplicaAckTests/testADeclineTooFew'
  [wait-for-any-replica]='IntegrationTests.EveryReplicaTests'
  [acks-default-from-a-snapshot]='IntegrationTests.EveryReplicaTests/testAProcessStarted'
  [backoff-never-grows]='RedisWireTests.BackoffTests'
  [json-control-unescaped]='AuthorizerCoreTests.JSONTextTests'
  [stream-tags-without-prefix]='LedgerTests.LedgerLayoutTests'
  [single-redis-reads-slot-map]='IntegrationTests.AuthorizationTests'
  [amount-mismatch-not-13]='IntegrationTests.ISO8583Tests/testReversalRestores'
  [webhooks-ack-before-delivery]='IntegrationTests.WebhookTests/testAFailingReceiver'
  [webhooks-no-signature-timestamp]='IntegrationTests.WebhookTests/testEveryEventType'
  [webhooks-order-broken]='IntegrationTests.WebhookTests/testAFailingReceiver'
  [webhooks-dead-endpoint-pins-stream]='IntegrationTests.WebhookTests/testADeadEndpoint'
  [webhooks-one-queue-per-endpoint]='IntegrationTests.WebhookTests/testAFailingAccountHoldsBackOnlyItsOwnEvents'
)

if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "the work tree has uncommitted changes; commit or stash them first" >&2
  exit 2
fi

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=($(ls scripts/mutations/*.patch | xargs -n1 basename | sed 's/\.patch$//'))
fi

export AUTHORIZER_BIN="$PWD/.build/debug/authorizer"
export AUTHORIZER_REDIS_CONF="$PWD/redis.conf"
logs=$(mktemp -d)
applied=""
restore() { [ -n "$applied" ] && git apply -R "$applied" && applied=""; }
trap 'restore; exit 130' INT TERM

declare -A RESULT
for name in "${names[@]}"; do
  patch="scripts/mutations/$name.patch"
  filter="${TESTS[$name]:-}"
  if [ ! -f "$patch" ] || [ -z "$filter" ]; then
    RESULT[$name]="unknown mutation"
    continue
  fi
  git apply "$patch" && applied="$patch"
  if ! swift build --build-tests >"$logs/$name.build" 2>&1; then
    RESULT[$name]="build failed (see $logs/$name.build)"
  elif swift test --skip-build --disable-swift-testing --filter "$filter" >"$logs/$name.test" 2>&1; then
    RESULT[$name]="MISSED"
  else
    failing=$(grep -oE "Test Case '[^']+' failed" "$logs/$name.test" | sed -E "s/Test Case '(.*)' failed/\1/" | sort -u | head -3 | paste -sd ' ')
    RESULT[$name]="caught by ${failing:-a crash (see $logs/$name.test)}"
  fi
  restore
  echo "$name: ${RESULT[$name]}"
done
swift build --build-tests >/dev/null 2>&1 || true

echo
printf '| %-30s | %s |\n' mutation result
printf '| %-30s | %s |\n' ------------------------------ ------
missed=0
for name in "${names[@]}"; do
  printf '| %-30s | %s |\n' "$name" "${RESULT[$name]}"
  case "${RESULT[$name]}" in caught*) ;; *) missed=$((missed + 1)) ;; esac
done
echo "logs in $logs"
[ "$missed" -eq 0 ]
