import AuthorizerCore
import NIOCore
import RedisWire

/// The older idempotency layout (one `txn:{ID}:TXNID` key per decision)
/// is still read until its last key has expired. `idempotency:buckets-since`
/// says from when this Redis holds day buckets only; the first `serve` that
/// writes buckets sets it (once, SET NX).
public enum OlderRecords {
    /// Until when (Unix seconds) the scripts must also read the older keys;
    /// 0 when this Redis never held any (the marker is set to 0 where the
    /// default rules are installed on an empty Redis).
    public static func readUntil(store: RulesStore, nowMs: Int64, lifetimeSeconds: Int) -> EventLoopFuture<Int64> {
        precondition(nowMs > 0 && lifetimeSeconds > 0)
        let key = Keys.bucketsSince
        return store.send(RedisCommand("SET", key, String(nowMs), "NX"), key: key)
            .flatMap { _ in store.send(RedisCommand("GET", key), key: key) }
            .flatMapThrowing { reply in
                guard let text = reply.string, let recorded = Int64(text), recorded >= 0 else {
                    throw RedisError.unexpectedReply("\(key) is not a Unix time in ms: \(reply)")
                }
                return recorded == 0 ? 0 : recorded / 1_000 + Int64(lifetimeSeconds)
            }
    }
}
