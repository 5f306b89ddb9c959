import NIOCore

/// Where an event loop's scripts run: one Redis (`RedisClient`) or a cluster
/// (`ClusterRouter`, which picks the master of the slot of the first key).
public protocol ScriptRunner: Sendable {
    var eventLoop: EventLoop { get }
    /// EVALSHA; on a cluster every key must share one slot.
    func evalScript(_ script: LuaScript, keys: [String], arguments: [String]) -> EventLoopFuture<RESPValue>
    func connect() -> EventLoopFuture<Void>
    /// Lets Redis answer what was sent, then closes.
    func shutdown() -> EventLoopFuture<Void>
    /// WAIT on the connection that carried the writes to `key`'s node: the
    /// number of replicas that acknowledged them.
    func waitForReplicas(_ count: Int, timeoutMs: Int, afterWritingTo key: String) -> EventLoopFuture<Int>
}

extension RedisClient: ScriptRunner {
    public func waitForReplicas(_ count: Int, timeoutMs: Int, afterWritingTo key: String) -> EventLoopFuture<Int> {
        waitForReplicas(count, timeoutMs: timeoutMs)
    }
}
extension ClusterRouter: ScriptRunner {
    public func waitForReplicas(_ count: Int, timeoutMs: Int, afterWritingTo key: String) -> EventLoopFuture<Int> {
        eventLoop.assertInEventLoop()
        guard let node = master(ofSlot: HashSlot.of(key: key)) else {
            return eventLoop.makeFailedFuture(RedisError.unavailable("no master serves the slot of \(key)"))
        }
        return client(for: node).waitForReplicas(count, timeoutMs: timeoutMs)
    }
}

extension HashSlot {
    /// The ledger stream tag of each slot: the first decimal integer (as
    /// text) whose own slot is that slot. `statements:{T}` then lives on the
    /// slot of the accounts it records. Anyone can recompute the table:
    /// for n = 0, 1, 2, …: slot(String(n)) gets n if it has no tag yet.
    public static let streamTags: [String] = {
        var tags = [String?](repeating: nil, count: count)
        var missing = count
        var candidate = 0
        while missing > 0 {
            let text = String(candidate)
            let slot = of(key: text)
            if tags[slot] == nil {
                tags[slot] = text
                missing -= 1
            }
            candidate += 1
        }
        return tags.map { $0 ?? "" }
    }()
}
