import AuthorizerCore
import Foundation
import NIOCore
import RedisWire
import Yams

/// Reads and writes the rules in Redis (`rules:mcc`, `rules:merchant`, `rules:config`).
public struct RulesStore: Sendable {
    public let redis: RedisClient

    public init(redis: RedisClient) {
        self.redis = redis
    }

    /// The rules in Redis; missing parts take the documented defaults
    /// (fallback CASH, mode whole, empty maps).
    public func load() -> EventLoopFuture<Rules> {
        let mcc = redis.send(RedisCommand("HGETALL", Keys.rulesMCC))
        let merchant = redis.send(RedisCommand("HGETALL", Keys.rulesMerchant))
        let config = redis.send(RedisCommand("HGETALL", Keys.rulesConfig))
        return mcc.and(merchant).and(config).flatMapThrowing { replies in
            let ((mccReply, merchantReply), configReply) = replies
            let config = try Self.dictionary(configReply)
            var merchants: [String: String] = [:]
            for (name, code) in try Self.dictionary(merchantReply) {
                merchants[MerchantDescriptor.normalize(name)] = code
            }
            var categories: [String: String] = [:]
            for (code, category) in try Self.dictionary(mccReply) {
                categories[code] = category.uppercased()
            }
            return Rules(
                mccCategories: categories,
                merchantMCCs: merchants,
                fallbackCategory: config["fallback"]?.uppercased() ?? "CASH",
                fallbackMode: config["fallback_mode"].flatMap(FallbackMode.init(rawValue:)) ?? .whole
            )
        }
    }

    /// Replaces the rules atomically (MULTI/EXEC) and tells running servers.
    public func save(_ rules: Rules) -> EventLoopFuture<Void> {
        precondition(rules.validationErrors().isEmpty, "validate rules before saving")
        var commands: [RedisCommand] = [
            RedisCommand("MULTI"),
            RedisCommand("DEL", Keys.rulesMCC, Keys.rulesMerchant, Keys.rulesConfig),
        ]
        if !rules.mccCategories.isEmpty {
            commands.append(RedisCommand(["HSET", Keys.rulesMCC] + rules.mccCategories.sorted { $0.key < $1.key }.flatMap { [$0.key, $0.value] }))
        }
        if !rules.merchantMCCs.isEmpty {
            commands.append(RedisCommand(["HSET", Keys.rulesMerchant] + rules.merchantMCCs.sorted { $0.key < $1.key }.flatMap { [$0.key, $0.value] }))
        }
        commands.append(RedisCommand("HSET", Keys.rulesConfig, "fallback", rules.fallbackCategory, "fallback_mode", rules.fallbackMode.rawValue))
        commands.append(RedisCommand("EXEC"))
        commands.append(RedisCommand("PUBLISH", Keys.rulesChangedChannel, "reload"))
        let replies = commands.map { redis.send($0) }
        return EventLoopFuture.whenAllSucceed(replies, on: redis.eventLoop).flatMapThrowing { replies in
            guard let exec = replies[replies.count - 2].array, exec.allSatisfy({ if case .error = $0 { return false } else { return true } }) else {
                throw RedisError.unexpectedReply("rules transaction failed: \(replies[replies.count - 2])")
            }
        }
    }

    /// Installs the default rules when Redis holds none. Returns true when it did.
    public func installDefaultsIfMissing() -> EventLoopFuture<Bool> {
        redis.send(RedisCommand("EXISTS", Keys.rulesMCC, Keys.rulesMerchant, Keys.rulesConfig)).flatMap { reply in
            guard reply.int == 0 else { return self.redis.eventLoop.makeSucceededFuture(false) }
            return self.save(.defaults).map { true }
        }
    }

    static func dictionary(_ reply: RESPValue) throws -> [String: String] {
        guard let items = reply.array, items.count % 2 == 0 else {
            throw RedisError.unexpectedReply("expected a hash, got \(reply)")
        }
        var result: [String: String] = [:]
        var index = 0
        while index < items.count {
            if let key = items[index].string, let value = items[index + 1].string { result[key] = value }
            index += 2
        }
        return result
    }
}

/// A rules file, JSON or YAML:
///
///     mcc: {"5411": FOOD, "5811": MEAL}
///     merchants: {"UBER EATS": "5812"}
///     fallback: CASH
///     fallback_mode: whole
public enum RulesFile {
    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    public static func parse(_ text: String, fileName: String) throws -> Rules {
        let document: Any?
        if fileName.lowercased().hasSuffix(".json") {
            document = try JSONSerialization.jsonObject(with: Data(text.utf8))
        } else {
            document = try Yams.load(yaml: text)
        }
        guard let root = document as? [String: Any] else { throw Invalid(description: "the rules file must hold a mapping") }
        let known: Set<String> = ["mcc", "merchants", "fallback", "fallback_mode"]
        if let unknown = root.keys.first(where: { !known.contains($0) }) {
            throw Invalid(description: "unknown key \"\(unknown)\" (expected mcc, merchants, fallback, fallback_mode)")
        }
        func mapping(_ key: String) throws -> [String: String] {
            guard let value = root[key] else { return [:] }
            guard let map = value as? [AnyHashable: Any] else { throw Invalid(description: "\(key) must be a mapping") }
            var result: [String: String] = [:]
            for (rawKey, rawValue) in map {
                result[stringValue(rawKey.base)] = stringValue(rawValue)
            }
            return result
        }
        var merchants: [String: String] = [:]
        for (name, mcc) in try mapping("merchants") { merchants[MerchantDescriptor.normalize(name)] = mcc }
        let modeText = root["fallback_mode"].map(stringValue) ?? FallbackMode.whole.rawValue
        guard let mode = FallbackMode(rawValue: modeText) else {
            throw Invalid(description: "fallback_mode must be whole or split, not \(modeText)")
        }
        let rules = Rules(
            mccCategories: try mapping("mcc").mapValues { $0.uppercased() },
            merchantMCCs: merchants,
            fallbackCategory: root["fallback"].map(stringValue)?.uppercased() ?? "CASH",
            fallbackMode: mode
        )
        let errors = rules.validationErrors()
        guard errors.isEmpty else { throw Invalid(description: errors.joined(separator: "; ")) }
        return rules
    }

    /// Numbers written without quotes (`5411: FOOD`) are read back as four digits.
    private static func stringValue(_ value: Any) -> String {
        if let int = value as? Int { return int < 10_000 && int >= 0 ? String(format: "%04d", int) : String(int) }
        return "\(value)"
    }
}
