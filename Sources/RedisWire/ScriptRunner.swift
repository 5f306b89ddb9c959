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
    ///
    /// A process computes it once, at start (`prepareStreamTags()`), before
    /// it takes traffic: a static is initialised under a lock, so a request
    /// that touched it first would wait for the whole table.
    public static let streamTags: [String] = makeStreamTags()

    /// Computes the table now, if no one has yet.
    public static func prepareStreamTags() {
        precondition(streamTags.count == count)
    }

    /// The integers in order, their CRCs built digit by digit: the CRC of
    /// each prefix is kept, so an increment recomputes only the digits that
    /// changed (about 1.1 steps per integer, no string made per integer).
    static func makeStreamTags() -> [String] {
        var tags = [String](repeating: "", count: count)
        var missing = count
        var digits: [UInt8] = [UInt8(ascii: "0")]
        // prefixCRC[i]: the CRC of digits[0..<i].
        var prefixCRC: [UInt16] = [0, crc16(digits)]
        // The integers up to 10^8 cover every slot many times over.
        while missing > 0 && digits.count <= 8 {
            let slot = Int(prefixCRC[digits.count] & 0x3FFF)
            if tags[slot].isEmpty {
                tags[slot] = String(decoding: digits, as: UTF8.self)
                missing -= 1
            }
            var changed = digits.count - 1
            while changed >= 0 && digits[changed] == UInt8(ascii: "9") {
                digits[changed] = UInt8(ascii: "0")
                changed -= 1
            }
            if changed < 0 {
                digits.insert(UInt8(ascii: "1"), at: 0)
                prefixCRC.append(0)
                changed = 0
            } else {
                digits[changed] += 1
            }
            for index in changed..<digits.count {
                prefixCRC[index + 1] = crc16(prefixCRC[index], digits[index])
            }
        }
        precondition(missing == 0, "some slot has no integer tag")
        return tags
    }
}
