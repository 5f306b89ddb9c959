import NIOCore
import RedisWire

/// Where the ledger pipeline sends the commands of one stream: the one Redis
/// (`BlockingRedis`), or on a cluster the master of the stream's slot
/// (`SlotRedis`, which follows MOVED through the router).
public protocol LedgerRedis: Sendable {
    @discardableResult
    func send(_ arguments: [String]) throws -> RESPValue
    /// Every command at once, replies in order; fails with the first error.
    func pipeline(_ commands: [[String]]) throws -> [RESPValue]
}

extension BlockingRedis: LedgerRedis {}

/// The master of one slot, through a `ClusterRouter` (blocking calls; never
/// from the router's event loop). A MOVED reply updates the router's slot map
/// and the command is resent to the new owner.
public struct SlotRedis: LedgerRedis {
    public let router: ClusterRouter
    public let slot: Int

    public init(router: ClusterRouter, slot: Int) {
        self.router = router
        self.slot = slot
    }

    public init(router: ClusterRouter, key: String) {
        self.init(router: router, slot: HashSlot.of(key: key))
    }

    @discardableResult
    public func send(_ arguments: [String]) throws -> RESPValue {
        try router.send(RedisCommand(arguments), slot: slot).wait()
    }

    public func pipeline(_ commands: [[String]]) throws -> [RESPValue] {
        let futures = commands.map { router.send(RedisCommand($0), slot: slot) }
        return try futures.map { try $0.wait() }
    }
}
