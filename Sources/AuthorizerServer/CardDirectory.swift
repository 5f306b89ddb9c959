import AuthorizerCore
import Crypto
import NIOConcurrencyHelpers
import NIOCore
import RedisWire

/// The key that indexes PANs (HMAC-SHA256), and during a rotation the one
/// before it. Only digests of PANs ever reach Redis.
public struct PANKeys: Sendable {
    /// The keys' bytes (a `SymmetricKey` is made per use: it is not `Sendable`).
    public let current: [UInt8]
    public let previous: [UInt8]?

    public init(current: [UInt8], previous: [UInt8]?) {
        precondition(!current.isEmpty)
        self.current = current
        self.previous = previous
    }

    /// The index digest of `pan` under `key`: 64 hex digits.
    public static func digest(_ pan: PAN, key: [UInt8]) -> String {
        let code = HMAC<SHA256>.authenticationCode(for: Array(pan.digits.utf8), using: SymmetricKey(data: key))
        return code.map { byte in
            let text = String(byte, radix: 16)
            return byte < 16 ? "0" + text : text
        }.joined()
    }
}

/// Resolves a request's card into its account and card id, through the PAN
/// index (`pan:{DIGEST}`) or the card id index (`cardid:{CARD}`). Both are
/// immutable once written, so what was found is cached (bounded); what was
/// not found is asked again next time (a card may be issued meanwhile).
public final class CardDirectory: Sendable {
    public enum Outcome: Sendable, Equatable {
        case card(account: String, cardID: String)
        case none
    }

    /// nil: no PAN key configured, so no PAN resolves (card ids still do).
    private let keys: PANKeys?
    private let maxCached: Int
    private let cache = NIOLockedValueBox<[String: Outcome]>([:])

    public init(keys: PANKeys?, maxCached: Int = 100_000) {
        precondition(maxCached > 0)
        self.keys = keys
        self.maxCached = maxCached
    }

    public var indexesPANs: Bool { keys != nil }

    public func resolve(_ reference: CardReference, on redis: Redis) -> EventLoopFuture<Outcome> {
        switch reference {
        case .id(let id):
            return lookUp(Keys.cardIndex(card: id), on: redis) { value in
                Identifier.isValid(value) ? .card(account: value, cardID: id) : .none
            }
        case .pan(let pan):
            guard let keys else { return redis.eventLoop.makeSucceededFuture(.none) }
            let key = Keys.panIndex(digest: PANKeys.digest(pan, key: keys.current))
            let current = lookUp(key, on: redis, Self.parseIndexEntry)
            guard let previous = keys.previous else { return current }
            return current.flatMap { outcome in
                guard outcome == .none else { return redis.eventLoop.makeSucceededFuture(outcome) }
                let old = Keys.panIndex(digest: PANKeys.digest(pan, key: previous))
                return self.lookUp(old, on: redis, Self.parseIndexEntry).map { found in
                    // Rotation: the card, met under the previous key, is indexed under the current one too.
                    if case .card(let account, let cardID) = found {
                        _ = redis.send(RedisCommand("SET", key, "\(account) \(cardID)", "NX"), slot: HashSlot.of(key: key))
                    }
                    return found
                }
            }
        }
    }

    /// `ACCOUNT CARD`.
    public static func parseIndexEntry(_ value: String) -> Outcome {
        let parts = value.split(separator: " ")
        guard parts.count == 2, Identifier.isValid(parts[0]), CardID.isValid(String(parts[1])) else { return .none }
        return .card(account: String(parts[0]), cardID: String(parts[1]))
    }

    private func lookUp(_ key: String, on redis: Redis, _ parse: @escaping @Sendable (String) -> Outcome) -> EventLoopFuture<Outcome> {
        if let hit = cache.withLockedValue({ $0[key] }) { return redis.eventLoop.makeSucceededFuture(hit) }
        return redis.send(RedisCommand("GET", key), slot: HashSlot.of(key: key)).map { reply in
            guard let value = reply.string else { return .none }
            let outcome = parse(value)
            if outcome != .none {
                self.cache.withLockedValue { cache in
                    // Bounded: a full cache starts over (entries are cheap to fetch again).
                    if cache.count >= self.maxCached { cache.removeAll(keepingCapacity: true) }
                    cache[key] = outcome
                }
            }
            return outcome
        }
    }
}
