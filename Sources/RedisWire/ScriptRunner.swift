import NIOCore

/// Where an event loop's scripts run: one Redis (`RedisClient`) or a cluster
/// (`Redis`, which picks the master of the slot of the first key).
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
extension Redis: ScriptRunner {}
