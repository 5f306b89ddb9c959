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
    /// EVALSHA, then (when `waitMs` gives a timeout for its reply) WAIT for
    /// `replicas` on the connection that carried it: on a cluster, the node
    /// that ran the script, whatever the slot map says by then.
    func evalScript(
        _ script: LuaScript, keys: [String], arguments: [String], replicas: Int, waitMs: @escaping @Sendable (RESPValue) -> Int?
    ) -> EventLoopFuture<ReplicatedReply>
}

/// A script's reply and, when a WAIT followed it, how many replicas acknowledged its writes.
public struct ReplicatedReply: Sendable {
    public let reply: RESPValue
    /// nil: no WAIT was asked for this reply.
    public let acknowledged: Int?
    /// The replicas the WAIT asked for: on a cluster, every replica listed
    /// for the node that ran the script, and at least the number asked.
    public let wanted: Int

    public init(reply: RESPValue, acknowledged: Int?, wanted: Int) {
        precondition(wanted >= 0)
        self.reply = reply
        self.acknowledged = acknowledged
        self.wanted = wanted
    }

    /// A WAIT was asked and fewer replicas than wanted acknowledged in time.
    public var isShort: Bool { acknowledged.map { $0 < wanted } ?? false }
}

extension RedisClient: ScriptRunner {}
extension ClusterRouter: ScriptRunner {}

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
