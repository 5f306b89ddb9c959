import Foundation
import GRDB

/// The deliverer's own store (SQLite, WAL, `synchronous = FULL`): the events
/// awaiting delivery (`outbox`, the retry store) and those given up on
/// (`dead_letters`). An event enters the outbox in the same transaction for
/// all the endpoints that want it, before its ledger entry is acknowledged,
/// so the ledger stream is never held back by an endpoint and nothing
/// acknowledged can be lost. The outbox has a cap (`events` in
/// `outbox_size`, kept exact by triggers); past it, new events go straight
/// to the dead letters, where `webhooks resend` finds them.
public final class WebhookOutbox: Sendable {
    public let path: String
    private let pool: DatabasePool

    /// One stored event, with its message.
    public struct Stored: Sendable {
        public let seq: Int64
        public let endpoint: String
        public let account: String
        public let attempts: Int
        public let enqueuedMilliseconds: Int64
        public let nextAttemptMilliseconds: Int64
        public let message: Message
    }

    public struct Message: Sendable {
        public let eventID: String
        public let createdMilliseconds: Int64
        public let body: [UInt8]
    }

    public struct EnqueueOutcome: Sendable, Equatable {
        public var stored = 0
        /// Already in the outbox (a batch re-read after a crash).
        public var duplicates = 0
        /// Stored as dead letters because the outbox was full.
        public var overflowed = 0
    }

    public init(path: String, create: Bool = true) throws {
        if !create && !FileManager.default.fileExists(atPath: path) {
            throw WebhookConfiguration.Invalid("no webhooks store at \(path); `authorizer webhooks deliver --db \(path)` creates it")
        }
        var configuration = Configuration()
        // The CLI (status, resend) and the deliverer share the file.
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        self.path = path
        pool = try DatabasePool(path: path, configuration: configuration)
        try Self.migrator.migrate(pool)
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: outbox, dead letters") { db in
            try db.execute(sql: """
                CREATE TABLE outbox (
                    seq             INTEGER PRIMARY KEY AUTOINCREMENT,  -- delivery order within an account
                    endpoint        TEXT NOT NULL,
                    event_id        TEXT NOT NULL,                      -- <stream>/<entry id>
                    account         TEXT NOT NULL,
                    type            TEXT NOT NULL,
                    created_ms      INTEGER NOT NULL,                   -- the ledger entry's time
                    enqueued_ms     INTEGER NOT NULL,                   -- the age limit counts from here
                    attempts        INTEGER NOT NULL DEFAULT 0,
                    next_attempt_ms INTEGER NOT NULL,
                    last_error      TEXT,
                    body            BLOB NOT NULL,
                    UNIQUE (endpoint, event_id)
                );
                CREATE TABLE dead_letters (
                    endpoint    TEXT NOT NULL,
                    event_id    TEXT NOT NULL,
                    account     TEXT NOT NULL,
                    type        TEXT NOT NULL,
                    created_ms  INTEGER NOT NULL,
                    buried_ms   INTEGER NOT NULL,
                    attempts    INTEGER NOT NULL,
                    last_error  TEXT NOT NULL,
                    body        BLOB NOT NULL,
                    PRIMARY KEY (endpoint, event_id)
                );
                CREATE INDEX dead_letters_account ON dead_letters (account);
                CREATE TABLE outbox_size (id INTEGER PRIMARY KEY CHECK (id = 1), events INTEGER NOT NULL);
                INSERT INTO outbox_size VALUES (1, 0);
                CREATE TRIGGER outbox_added AFTER INSERT ON outbox BEGIN UPDATE outbox_size SET events = events + 1; END;
                CREATE TRIGGER outbox_removed AFTER DELETE ON outbox BEGIN UPDATE outbox_size SET events = events - 1; END;
                """)
        }
        return migrator
    }

    /// Stores one batch's events in one transaction; past `cap` events in the
    /// outbox, the rest become dead letters ("retry store full").
    public func enqueue(_ events: [(endpoint: String, event: WebhookEvent)], now: Int64, cap: Int) async throws -> EnqueueOutcome {
        guard !events.isEmpty else { return EnqueueOutcome() }
        return try await pool.write { db in
            var outcome = EnqueueOutcome()
            var size = try Int.fetchOne(db, sql: "SELECT events FROM outbox_size") ?? 0
            for (endpoint, event) in events {
                if size >= cap {
                    try db.execute(sql: """
                        INSERT OR IGNORE INTO dead_letters (endpoint, event_id, account, type, created_ms, buried_ms, attempts, last_error, body)
                        VALUES (?, ?, ?, ?, ?, ?, 0, 'retry store full', ?)
                        """, arguments: [endpoint, event.id, event.account, event.kind.rawValue, event.createdMilliseconds, now, Data(event.body)])
                    outcome.overflowed += 1
                    continue
                }
                try db.execute(sql: """
                    INSERT OR IGNORE INTO outbox (endpoint, event_id, account, type, created_ms, enqueued_ms, next_attempt_ms, body)
                    VALUES (?, ?, ?, ?, ?, ?, 0, ?)
                    """, arguments: [endpoint, event.id, event.account, event.kind.rawValue, event.createdMilliseconds, now, Data(event.body)])
                if db.changesCount == 1 {
                    outcome.stored += 1
                    size += 1
                } else {
                    outcome.duplicates += 1
                }
            }
            return outcome
        }
    }

    /// An endpoint's stored events after `seq`, in seq order, at most `limit`.
    public func stored(endpoint: String, after seq: Int64, limit: Int) async throws -> [Stored] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT seq, account, attempts, enqueued_ms, next_attempt_ms, event_id, created_ms, body FROM outbox
                WHERE endpoint = ? AND seq > ? ORDER BY seq LIMIT ?
                """, arguments: [endpoint, seq, limit]).map { row in
                Stored(
                    seq: row[0], endpoint: endpoint, account: row[1], attempts: row[2], enqueuedMilliseconds: row[3], nextAttemptMilliseconds: row[4],
                    message: Message(eventID: row[5], createdMilliseconds: row[6], body: Array(row[7] as Data))
                )
            }
        }
    }

    /// The body to send for a stored event (nil: no longer stored).
    public func message(seq: Int64) async throws -> Message? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT event_id, created_ms, body FROM outbox WHERE seq = ?", arguments: [seq]).map { row in
                Message(eventID: row[0], createdMilliseconds: row[1], body: Array(row[2] as Data))
            }
        }
    }

    /// Records delivered events (removed) and failed ones (attempts, next
    /// attempt) in one transaction.
    public func record(delivered: [Int64], failed: [(seq: Int64, attempts: Int, nextAttempt: Int64, error: String)]) async throws {
        guard !delivered.isEmpty || !failed.isEmpty else { return }
        try await pool.write { db in
            for seq in delivered {
                try db.execute(sql: "DELETE FROM outbox WHERE seq = ?", arguments: [seq])
            }
            for failure in failed {
                try db.execute(
                    sql: "UPDATE outbox SET attempts = ?, next_attempt_ms = ?, last_error = ? WHERE seq = ?",
                    arguments: [failure.attempts, failure.nextAttempt, String(failure.error.prefix(500)), failure.seq]
                )
            }
        }
    }

    /// Moves a stored event to the dead letters.
    public func bury(seq: Int64, attempts: Int, error: String, now: Int64) async throws {
        try await pool.write { db in
            try db.execute(sql: """
                INSERT OR REPLACE INTO dead_letters (endpoint, event_id, account, type, created_ms, buried_ms, attempts, last_error, body)
                SELECT endpoint, event_id, account, type, created_ms, ?, ?, ?, body FROM outbox WHERE seq = ?
                """, arguments: [now, attempts, String(error.prefix(500)), seq])
            try db.execute(sql: "DELETE FROM outbox WHERE seq = ?", arguments: [seq])
        }
    }

    /// Events in the outbox, every endpoint together.
    public func size() throws -> Int {
        try pool.read { db in try Int.fetchOne(db, sql: "SELECT events FROM outbox_size") ?? 0 }
    }

    /// Which dead letters `resend` moves back.
    public struct Selection: Sendable {
        public var endpoint: String?
        public var eventID: String?
        public var account: String?
        /// Ledger time range, ms since the epoch, inclusive.
        public var sinceMilliseconds: Int64?
        public var untilMilliseconds: Int64?
        public init() {}
    }

    /// Moves the selected dead letters back into the outbox (attempts from
    /// zero, the age limit from now), in ledger order; the running
    /// deliverer picks them up within a second. Returns how many.
    public func resend(_ selection: Selection, now: Int64) throws -> Int {
        var conditions: [String] = []
        var arguments: [(any DatabaseValueConvertible)?] = [now]
        if let endpoint = selection.endpoint { conditions.append("endpoint = ?"); arguments.append(endpoint) }
        if let id = selection.eventID { conditions.append("event_id = ?"); arguments.append(id) }
        if let account = selection.account { conditions.append("account = ?"); arguments.append(account) }
        if let since = selection.sinceMilliseconds { conditions.append("created_ms >= ?"); arguments.append(since) }
        if let until = selection.untilMilliseconds { conditions.append("created_ms <= ?"); arguments.append(until) }
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        return try pool.write { db in
            try db.execute(sql: """
                INSERT OR IGNORE INTO outbox (endpoint, event_id, account, type, created_ms, enqueued_ms, next_attempt_ms, body)
                SELECT endpoint, event_id, account, type, created_ms, ?, 0, body FROM dead_letters \(filter)
                ORDER BY created_ms, rowid
                """, arguments: StatementArguments(arguments))
            let moved = db.changesCount
            try db.execute(sql: "DELETE FROM dead_letters \(filter)", arguments: StatementArguments(Array(arguments.dropFirst())))
            return moved
        }
    }

    public struct EndpointStatus: Sendable, Equatable {
        public let endpoint: String
        public let backlog: Int
        public let oldestUndeliveredMilliseconds: Int64?
        public let deadLetters: Int
        public let oldestDeadMilliseconds: Int64?
    }

    /// Backlog and dead letters per endpoint (ledger times).
    public func status() throws -> [EndpointStatus] {
        try pool.read { db in
            var backlog: [String: (Int, Int64?)] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT endpoint, COUNT(*), MIN(created_ms) FROM outbox GROUP BY endpoint") {
                backlog[row[0]] = (row[1], row[2])
            }
            var dead: [String: (Int, Int64?)] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT endpoint, COUNT(*), MIN(created_ms) FROM dead_letters GROUP BY endpoint") {
                dead[row[0]] = (row[1], row[2])
            }
            return Set(backlog.keys).union(dead.keys).sorted().map { name in
                EndpointStatus(
                    endpoint: name, backlog: backlog[name]?.0 ?? 0, oldestUndeliveredMilliseconds: backlog[name]?.1 ?? nil,
                    deadLetters: dead[name]?.0 ?? 0, oldestDeadMilliseconds: dead[name]?.1 ?? nil
                )
            }
        }
    }

    /// Dead letters per endpoint (for the metrics at start).
    public func deadLetterCounts() throws -> [String: Int] {
        try pool.read { db in
            var counts: [String: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT endpoint, COUNT(*) FROM dead_letters GROUP BY endpoint") {
                counts[row[0]] = row[1]
            }
            return counts
        }
    }
}
