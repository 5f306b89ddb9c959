import AuthorizerCore
import Foundation
import NIOCore
import RedisWire
import Yams

/// Reads and writes the rules in Redis (`rules:mcc`, `rules:merchant`, `rules:config`).
///
/// On a Redis Cluster those three keys would hash to three slots, so no
/// transaction could replace them together. There the rules are versioned:
/// `rules:{V}:mcc`, `rules:{V}:merchant`, `rules:{V}:config` (one slot, one
/// MULTI/EXEC), and `rules:current` holds V. A new set is written under a new
/// V (`INCR rules:version`), then `rules:current` is switched: a reader sees
/// the old set or the new one, never half of each.
public struct RulesStore: Sendable {
    public let redis: Redis

    public static let currentVersionKey = "rules:current"
    public static let versionCounterKey = "rules:version"

    public init(redis: Redis) {
        self.redis = redis
    }

    /// Versioned keys: on a cluster the three keys would hash to three slots.
    private var isVersioned: Bool { redis.target.isCluster }

    /// The three keys of the rules: fixed on one Redis, versioned on a cluster.
    public static func keys(version: Int64?) -> (mcc: String, merchant: String, config: String) {
        guard let version else { return (Keys.rulesMCC, Keys.rulesMerchant, Keys.rulesConfig) }
        return ("rules:{\(version)}:mcc", "rules:{\(version)}:merchant", "rules:{\(version)}:config")
    }

    /// `command` to the master of `key`'s slot.
    func send(_ command: RedisCommand, key: String) -> EventLoopFuture<RESPValue> {
        redis.send(command, slot: HashSlot.of(key: key))
    }

    /// The version `rules:current` names (cluster), nil when none was saved.
    private func currentVersion() -> EventLoopFuture<Int64?> {
        send(RedisCommand("GET", Self.currentVersionKey), key: Self.currentVersionKey).map { $0.int }
    }

    /// The rules in Redis; missing parts take the documented defaults
    /// (fallback CASH, mode whole, empty maps).
    public func load() -> EventLoopFuture<Rules> {
        guard isVersioned else { return load(Self.keys(version: nil)) }
        return loadCurrent(attempts: 3)
    }

    /// A version replaced and deleted between reading `rules:current` and
    /// its hashes has no config hash any more: read the pointer again.
    private func loadCurrent(attempts: Int) -> EventLoopFuture<Rules> {
        currentVersion().flatMap { version in
            guard let version else { return self.redis.eventLoop.makeSucceededFuture(Rules(mccCategories: [:], merchantMCCs: [:], fallbackCategory: "CASH", fallbackMode: .whole)) }
            let keys = Self.keys(version: version)
            return self.send(RedisCommand("EXISTS", keys.config), key: keys.config).flatMap { exists in
                if exists.int == 0 && attempts > 1 { return self.loadCurrent(attempts: attempts - 1) }
                return self.load(keys)
            }
        }
    }

    private func load(_ keys: (mcc: String, merchant: String, config: String)) -> EventLoopFuture<Rules> {
        let mcc = send(RedisCommand("HGETALL", keys.mcc), key: keys.mcc)
        let merchant = send(RedisCommand("HGETALL", keys.merchant), key: keys.merchant)
        let config = send(RedisCommand("HGETALL", keys.config), key: keys.config)
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
            var controls: [ControlKind: String] = [:]
            for kind in ControlKind.allCases {
                if let value = config[Self.controlField(kind)] { controls[kind] = value }
            }
            return Rules(
                mccCategories: categories,
                merchantMCCs: merchants,
                fallbackCategory: config["fallback"]?.uppercased() ?? "CASH",
                fallbackMode: config["fallback_mode"].flatMap(FallbackMode.init(rawValue:)) ?? .whole,
                programControls: ProgramControls(controls)
            )
        }
    }

    /// Replaces the rules atomically (MULTI/EXEC) and tells running servers.
    public func save(_ rules: Rules) -> EventLoopFuture<Void> {
        precondition(rules.validationErrors().isEmpty, "validate rules before saving")
        guard isVersioned else { return write(rules, keys: Self.keys(version: nil)).flatMap { self.announce() } }
        // Cluster: a new version, then the pointer; the version before the
        // previous one is deleted (a reader of the previous one may still be busy).
        return send(RedisCommand("INCR", Self.versionCounterKey), key: Self.versionCounterKey).flatMap { reply in
            guard let version = reply.int else {
                return self.redis.eventLoop.makeFailedFuture(RedisError.unexpectedReply("INCR \(Self.versionCounterKey): \(reply)"))
            }
            return self.write(rules, keys: Self.keys(version: version)).flatMap {
                self.send(RedisCommand("SET", Self.currentVersionKey, String(version)), key: Self.currentVersionKey)
            }.flatMap { _ in
                self.announce()
            }.flatMap {
                guard version > 2 else { return self.redis.eventLoop.makeSucceededVoidFuture() }
                let stale = Self.keys(version: version - 2)
                return self.send(RedisCommand("DEL", stale.mcc, stale.merchant, stale.config), key: stale.mcc).map { _ in }
            }
        }
    }

    private func announce() -> EventLoopFuture<Void> {
        send(RedisCommand("PUBLISH", Keys.rulesChangedChannel, "reload"), key: Keys.rulesChangedChannel).map { _ in }
    }

    private func write(_ rules: Rules, keys: (mcc: String, merchant: String, config: String)) -> EventLoopFuture<Void> {
        var commands: [RedisCommand] = [
            RedisCommand("MULTI"),
            RedisCommand("DEL", keys.mcc, keys.merchant, keys.config),
        ]
        if !rules.mccCategories.isEmpty {
            commands.append(RedisCommand(["HSET", keys.mcc] + rules.mccCategories.sorted { $0.key < $1.key }.flatMap { [$0.key, $0.value] }))
        }
        if !rules.merchantMCCs.isEmpty {
            commands.append(RedisCommand(["HSET", keys.merchant] + rules.merchantMCCs.sorted { $0.key < $1.key }.flatMap { [$0.key, $0.value] }))
        }
        let controls = rules.programControls.values.sorted { $0.key.rawValue < $1.key.rawValue }.flatMap { [Self.controlField($0.key), $0.value] }
        commands.append(RedisCommand(["HSET", keys.config, "fallback", rules.fallbackCategory, "fallback_mode", rules.fallbackMode.rawValue] + controls))
        commands.append(RedisCommand("EXEC"))
        // All on one connection, in order: the keys share a slot.
        let replies = commands.map { send($0, key: keys.mcc) }
        return EventLoopFuture.whenAllSucceed(replies, on: redis.eventLoop).flatMapThrowing { replies in
            guard let exec = replies[replies.count - 1].array, exec.allSatisfy({ if case .error = $0 { return false } else { return true } }) else {
                throw RedisError.unexpectedReply("rules transaction failed: \(replies[replies.count - 1])")
            }
        }
    }

    /// Installs the default rules when Redis holds none. Returns true when it
    /// did: no service ever ran on this Redis, so it holds no idempotency
    /// record of the older one-key form either (`idempotency:buckets-since` 0).
    public func installDefaultsIfMissing() -> EventLoopFuture<Bool> {
        let exists = isVersioned
            ? send(RedisCommand("EXISTS", Self.currentVersionKey), key: Self.currentVersionKey)
            : send(RedisCommand("EXISTS", Keys.rulesMCC, Keys.rulesMerchant, Keys.rulesConfig), key: Keys.rulesMCC)
        return exists.flatMap { reply in
            guard reply.int == 0 else { return self.redis.eventLoop.makeSucceededFuture(false) }
            return self.save(.defaults)
                .flatMap { self.send(RedisCommand("SET", Keys.bucketsSince, "0", "NX"), key: Keys.bucketsSince) }
                .map { _ in true }
        }
    }

    /// The field of a program control in the rules' config hash: `control.KIND`.
    public static func controlField(_ kind: ControlKind) -> String { "control.\(kind.rawValue)" }

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
        let known: Set<String> = ["mcc", "merchants", "fallback", "fallback_mode", "controls"]
        if let unknown = root.keys.first(where: { !known.contains($0) }) {
            throw Invalid(description: "unknown key \"\(unknown)\" (expected mcc, merchants, fallback, fallback_mode, controls)")
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
            fallbackMode: mode,
            programControls: try controls(root["controls"])
        )
        let errors = rules.validationErrors()
        guard errors.isEmpty else { throw Invalid(description: errors.joined(separator: "; ")) }
        return rules
    }

    /// `controls:` — the program's spending controls, by kind (see
    /// ControlKind): amounts as quoted decimals ("150.00", never read
    /// through a floating-point number), counts as integers, blocked_mcc and
    /// blocked_merchant as lists (or one comma-separated string of MCCs).
    static func controls(_ value: Any?) throws -> ProgramControls {
        guard let value else { return .none }
        guard let map = value as? [AnyHashable: Any] else { throw Invalid(description: "controls must be a mapping") }
        var controls: [ControlKind: String] = [:]
        for (rawKey, rawValue) in map {
            let name = "\(rawKey.base)"
            guard let kind = ControlKind(rawValue: name) else {
                throw Invalid(description: "controls: unknown control \"\(name)\" (expected \(ControlKind.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            if rawValue is Double { throw Invalid(description: "controls: \(name): write amounts quoted, as \"150.00\"") }
            let items: [String]
            if let list = rawValue as? [Any] {
                items = list.map { kind == .blockedMCC ? stringValue($0) : "\($0)" }
            } else if let int = rawValue as? Int {
                items = [kind == .blockedMCC ? stringValue(int) : String(int)]
            } else {
                items = ["\(rawValue)"]
            }
            do {
                controls[kind] = try kind.storedValue(items)
            } catch {
                throw Invalid(description: "controls: \(error)")
            }
        }
        return ProgramControls(controls)
    }

    /// Numbers written without quotes (`5411: FOOD`) are read back as four digits.
    private static func stringValue(_ value: Any) -> String {
        if let int = value as? Int { return int < 10_000 && int >= 0 ? String(format: "%04d", int) : String(int) }
        return "\(value)"
    }
}
