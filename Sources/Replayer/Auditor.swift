import AuthorizerCore
import Ledger
import Logging
import RedisWire

/// Balances recomputed from statements, in stream order: a `set` sets, a
/// `credit` adds, an approved authorization subtracts its debits, a reversal
/// adds back its credits. Each
/// statement also records the balance after it; a recorded balance that
/// disagrees with the recomputed one is a break in the books (a missing
/// entry, or a balance changed outside the scripts).
public struct LedgerBalances: Sendable {
    public private(set) var balances: [String: [String: Int64]] = [:]
    public private(set) var breaks: [Discontinuity] = []
    private var brokenCategories: Set<String> = []
    public private(set) var applied = 0

    public struct Discontinuity: Sendable, Equatable, CustomStringConvertible {
        public let entryID: StreamID
        public let account: String
        public let category: String
        public let recorded: Int64
        public let recomputed: Int64

        public var description: String {
            "entry \(entryID) account \(account) \(category): recorded balance \(Cents(recorded)), recomputed \(Cents(recomputed))"
        }
    }

    public init() {}

    public mutating func apply(_ statement: Statement) {
        applied += 1
        var account = balances[statement.account, default: [:]]
        switch statement.kind {
        case .set:
            for posting in statement.credits { account[posting.category] = posting.cents }
        case .credit:
            for posting in statement.credits { account[posting.category, default: 0] += posting.cents }
        case .authorization:
            if statement.code == .approved {
                for posting in statement.debits { account[posting.category, default: 0] -= posting.cents }
            }
        case .reversal:
            if statement.code == .approved {
                for posting in statement.credits { account[posting.category, default: 0] += posting.cents }
            }
        case .revert:
            for posting in statement.debits { account[posting.category, default: 0] -= posting.cents }
        case .card, .freeze:
            break  // no money moves
        }
        for recorded in statement.balances {
            let recomputed = account[recorded.category, default: 0]
            // Report where each category first breaks; later entries of it would repeat the news.
            let key = "\(statement.account)\u{0}\(recorded.category)"
            if recomputed != recorded.cents && !brokenCategories.contains(key) {
                brokenCategories.insert(key)
                breaks.append(Discontinuity(
                    entryID: statement.entryID, account: statement.account, category: recorded.category,
                    recorded: recorded.cents, recomputed: recomputed
                ))
            }
        }
        balances[statement.account] = account
    }
}

/// Recomputes every account's balances from the replayed statements and
/// compares them with the live balances in Redis.
///
/// Consistent under live traffic: each account's balances are read with a
/// stream position they match (see `snapshot`), and only statements up to
/// that position count for that account. Statements the replayer has not applied
/// yet (at or after its group's oldest unacknowledged entry) are read from
/// the stream itself, so the audit does not need the replayer to be idle.
public final class Auditor {
    private let store: StatementStore
    private let group: String
    /// The ledger stream of an account (`statements`, or its slot's stream on a cluster).
    private let streamOf: (String) -> String
    /// Where a stream's commands go (the one Redis, or the master of its slot).
    private let redisFor: (String) -> any LedgerRedis
    /// Every account with balances in Redis.
    private let scanAccounts: @Sendable () async throws -> [String]

    /// Each account against the stream that records it (`statements` on one
    /// Redis, its slot's stream on a cluster), on the master of its slot.
    public convenience init(store: StatementStore, ledger: LedgerClient, group: String = Keys.replayGroup) {
        self.init(
            store: store, group: group, streamOf: { [layout = ledger.layout] in layout.stream(forAccount: $0) },
            redisFor: { ledger.redis(forKey: $0) }, scanAccounts: { try await ledger.accounts() }
        )
    }

    init(
        store: StatementStore, group: String, streamOf: @escaping (String) -> String,
        redisFor: @escaping (String) -> any LedgerRedis, scanAccounts: @escaping @Sendable () async throws -> [String]
    ) {
        self.store = store
        self.group = group
        self.streamOf = streamOf
        self.redisFor = redisFor
        self.scanAccounts = scanAccounts
    }

    public struct Mismatch: Sendable, Equatable, CustomStringConvertible {
        public let account: String
        public let category: String
        /// nil: the category is not in the ledger / not in Redis.
        public let ledger: Int64?
        public let redis: String?

        public var description: String {
            let ledgerText = ledger.map { Cents($0).description } ?? "absent"
            let redisText = redis.map { raw in Int64(raw).map { Cents($0).description } ?? "\"\(raw)\" (not cents)" } ?? "absent"
            return "account \(account) \(category): ledger \(ledgerText), redis \(redisText)"
        }
    }

    public struct Report: Sendable {
        public var accounts = 0
        public var streams = 0
        public var fromDatabase = 0
        public var fromStream = 0
        public var mismatches: [Mismatch] = []
        public var breaks: [LedgerBalances.Discontinuity] = []
        public var rejected: [(entryID: String, error: String)] = []
        public var unreadableStreamEntries: [String] = []

        public var passed: Bool { mismatches.isEmpty && breaks.isEmpty && rejected.isEmpty && unreadableStreamEntries.isEmpty }
    }

    static let snapshotChunk = 256
    static let streamPage = 1_000

    public func run() async throws -> Report {
        var report = Report()
        let accounts = Set(try await scanAccounts()).union(try store.accounts())
        var byStream: [String: [String]] = [:]
        for account in accounts { byStream[streamOf(account), default: []].append(account) }
        report.streams = byStream.count
        var ledger = LedgerBalances()
        var snapshots: [String: Snapshot] = [:]
        // Each stream on its own: an account's statements are all in its stream,
        // and its balances are read against that stream's last id.
        for (stream, members) in byStream.sorted(by: { $0.key < $1.key }) {
            let streamSnapshots = try await audit(stream: stream, accounts: members.sorted(), into: &ledger, report: &report)
            snapshots.merge(streamSnapshots) { first, _ in first }
        }
        report.accounts = snapshots.count

        for (account, snapshot) in snapshots.sorted(by: { $0.key < $1.key }) {
            let expected = ledger.balances[account] ?? [:]
            for category in Set(expected.keys).union(snapshot.balances.keys).sorted() {
                let live = snapshot.balances[category]
                let computed = expected[category]
                // A category missing on one side equals a zero on the other;
                // a live value that is not whole cents never matches.
                let liveCents: Int64? = live.map { Int64($0) } ?? 0
                if liveCents != (computed ?? 0) {
                    report.mismatches.append(Mismatch(account: account, category: category, ledger: computed, redis: live))
                }
            }
        }
        report.breaks = ledger.breaks
        report.rejected = try store.rejectedEntries()
        return report
    }

    /// The statements of one stream, for the accounts written to it.
    private func audit(stream: String, accounts: [String], into ledger: inout LedgerBalances, report: inout Report) async throws -> [String: Snapshot] {
        let redis = redisFor(stream)
        // Below this id every entry is acknowledged by the replayer, hence in the database.
        let replayed = try await redis.oldestNeeded(stream: stream, group: group) ?? .zero
        let snapshots = try await snapshot(accounts, stream: stream, redis: redis)

        try store.forEachInStreamOrder(stream: stream, below: replayed) { statement in
            report.fromDatabase += 1
            if let snapshot = snapshots[statement.account], statement.entryID <= snapshot.cutoff {
                ledger.apply(statement)
            }
        }
        let latestCutoff = snapshots.values.map(\.cutoff).max() ?? .zero
        // The rest from the stream, from `replayed` on. A replayer may apply,
        // acknowledge and trim entries of that range while this reads: those
        // are in the database by then, so the database is read again for the
        // range once the stream has been read, and the two are merged by id.
        var unreplayed: [StreamID: Statement] = [:]
        var start = replayed.description
        pages: while true {
            let entries = try await StreamReply.entries(redis.send(["XRANGE", stream, start, "+", "COUNT", String(Self.streamPage)]))
            for entry in entries {
                if entry.id > latestCutoff { break pages }
                guard let statement = try? Statement(entry: entry) else {
                    report.unreadableStreamEntries.append(stream == Keys.statements ? entry.id.description : "\(stream) \(entry.id)")
                    continue
                }
                report.fromStream += 1
                unreplayed[statement.entryID] = statement
            }
            guard let last = entries.last, entries.count == Self.streamPage else { break }
            start = "(\(last.id)"
        }
        if latestCutoff >= replayed {
            try store.forEachInStreamOrder(stream: stream, from: replayed, through: latestCutoff) { statement in
                if unreplayed.updateValue(statement, forKey: statement.entryID) == nil { report.fromDatabase += 1 }
            }
        }
        for (_, statement) in unreplayed.sorted(by: { $0.key < $1.key }) {
            if let snapshot = snapshots[statement.account], statement.entryID <= snapshot.cutoff {
                ledger.apply(statement)
            }
        }
        return snapshots
    }

    /// The accounts with balances on one Redis node (SCAN is node-local).
    public static func scanAccounts(on redis: any LedgerRedis) async throws -> [String] {
        var cursor = "0"
        var accounts: [String] = []
        repeat {
            let reply = try await redis.send(["SCAN", cursor, "MATCH", "account:{*}", "COUNT", "1000", "TYPE", "hash"])
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string else {
                throw RedisError.unexpectedReply("SCAN: \(reply)")
            }
            accounts += (parts[1].array ?? []).compactMap { $0.string.flatMap(Keys.accountOfBalanceKey) }
            cursor = next
        } while cursor != "0"
        return accounts
    }

    struct Snapshot {
        let balances: [String: String]
        /// Every statement of the account up to this id is reflected in `balances`, and none after it.
        let cutoff: StreamID
    }

    static let maxSnapshotAttempts = 10

    /// Each account's balances together with a stream position they match,
    /// using reads only (the audit runs as the read-only operator user):
    /// read the stream's last id, the balances, the last id again; if no
    /// statement of the account was written in between, the balances match
    /// the first id. Accounts written in between are read again.
    private func snapshot(_ accounts: [String], stream: String, redis: any LedgerRedis) async throws -> [String: Snapshot] {
        var result: [String: Snapshot] = [:]
        var remaining = accounts
        var attempt = 0
        while !remaining.isEmpty {
            attempt += 1
            guard attempt <= Self.maxSnapshotAttempts else {
                throw AuditError.unstable(remaining.count)
            }
            var busy: [String] = []
            var index = 0
            while index < remaining.count {
                let chunk = Array(remaining[index..<min(index + Self.snapshotChunk, remaining.count)])
                let lastID = ["XREVRANGE", stream, "+", "-", "COUNT", "1"]
                let replies = try await redis.pipeline([lastID] + chunk.map { ["HGETALL", Keys.account($0)] } + [lastID])
                let before = try StreamReply.entries(replies[0]).first?.id ?? .zero
                let after = try StreamReply.entries(replies[replies.count - 1]).first?.id ?? .zero
                let written = try await accountsWritten(stream: stream, redis: redis, after: before, upTo: after)
                for (offset, account) in chunk.enumerated() {
                    if written.contains(account) {
                        busy.append(account)
                    } else {
                        result[account] = Snapshot(balances: StreamReply.pairs(replies[offset + 1]).compactMapValues(\.string), cutoff: before)
                    }
                }
                index += Self.snapshotChunk
            }
            remaining = busy
        }
        return result
    }

    /// Accounts with a statement in (`start`, `end`].
    private func accountsWritten(stream: String, redis: any LedgerRedis, after start: StreamID, upTo end: StreamID) async throws -> Set<String> {
        var accounts: Set<String> = []
        var from = start
        while from < end {
            let entries = try await StreamReply.entries(redis.send(["XRANGE", stream, "(\(from)", end.description, "COUNT", String(Self.streamPage)]))
            guard let last = entries.last else { break }
            for entry in entries { if let account = entry.fields?["account"] { accounts.insert(account) } }
            from = last.id
        }
        return accounts
    }
}

public enum AuditError: Error, CustomStringConvertible {
    case unstable(Int)
    public var description: String {
        switch self {
        case .unstable(let count): return "\(count) accounts changed during every attempt to read them; audit again when traffic is lower"
        }
    }
}
