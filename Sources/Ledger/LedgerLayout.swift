import AuthorizerCore
import NIOCore
import RedisWire

/// Where the ledger's streams are, the one place that knows it.
///
/// One Redis keeps one stream, `statements` (the key operators read with
/// redis-cli). A cluster keeps one stream per slot, `statements:{T}`, T the
/// slot's tag (`tags`): the stream that records an account's decisions lives
/// on the account's slot, so a script that decides and records touches one
/// slot.
public enum LedgerLayout: Sendable, Equatable {
    case oneStream
    case streamPerSlot

    /// The stream that records `account`'s decisions.
    public func stream(forAccount account: String) -> String {
        switch self {
        case .oneStream: return Keys.statements
        case .streamPerSlot: return Self.stream(ofSlot: HashSlot.of(key: Keys.account(account)))
        }
    }

    /// Whether `key` is one of this layout's ledger streams (what a
    /// consumer reads; `xadd` keyevents name other streams too).
    public func isLedgerStream(_ key: String) -> Bool {
        switch self {
        case .oneStream: return key == Keys.statements
        case .streamPerSlot: return key != Keys.statements && Keys.isStatementsStream(key)
        }
    }

    /// The ledger streams a node serving `ranges` holds.
    public func streams(servedBy ranges: [ClosedRange<Int>]) -> [String] {
        switch self {
        case .oneStream: return [Keys.statements]
        case .streamPerSlot: return Self.streams(inSlots: ranges)
        }
    }

    /// How often `serve` reads the replayer's lag: a reading of one stream
    /// is a handful of commands; a cluster's is one XLEN per slot when its
    /// streams changed.
    public var lagReadInterval: TimeAmount {
        switch self {
        case .oneStream: return .seconds(1)
        case .streamPerSlot: return .seconds(10)
        }
    }

    /// The slot stream of `slot` (a cluster's layout).
    public static func stream(ofSlot slot: Int) -> String {
        precondition((0..<HashSlot.count).contains(slot), "slot \(slot)")
        return Keys.statements(tag: tags[slot])
    }

    /// The slot streams of the slots a node serves (a cluster's layout).
    public static func streams(inSlots ranges: [ClosedRange<Int>]) -> [String] {
        ranges.flatMap { $0.map(stream(ofSlot:)) }
    }

    /// The tag of each slot: the first decimal integer (as text) whose own
    /// slot is that slot. Anyone can recompute the table: for n = 0, 1, 2, …:
    /// slot(String(n)) gets n if it has no tag yet.
    ///
    /// A process computes it once, at start (`prepare()`), before it takes
    /// traffic: a static is initialised under a lock, so a request that
    /// touched it first would wait for the whole table.
    public static let tags: [String] = makeTags()

    /// Computes the tag table now, if no one has yet.
    public static func prepare() {
        precondition(tags.count == HashSlot.count)
    }

    /// The integers in order, their CRCs built digit by digit: the CRC of
    /// each prefix is kept, so an increment recomputes only the digits that
    /// changed (about 1.1 steps per integer, no string made per integer).
    static func makeTags() -> [String] {
        var tags = [String](repeating: "", count: HashSlot.count)
        var missing = HashSlot.count
        var digits: [UInt8] = [UInt8(ascii: "0")]
        // prefixCRC[i]: the CRC of digits[0..<i].
        var prefixCRC: [UInt16] = [0, HashSlot.crc16(digits)]
        // The integers below 10^8 cover every slot many times over.
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
                prefixCRC[index + 1] = HashSlot.crc16(prefixCRC[index], digits[index])
            }
        }
        precondition(missing == 0, "some slot has no integer tag")
        return tags
    }
}

extension RedisTarget {
    /// Where the ledger's streams are on this deployment.
    public var ledger: LedgerLayout { isCluster ? .streamPerSlot : .oneStream }

    /// The stream that records an account's decisions.
    public func statementsKey(forAccount account: String) -> String {
        ledger.stream(forAccount: account)
    }
}
