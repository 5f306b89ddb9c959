import AuthorizerCore
import Foundation
import GRDB
import Ledger

/// The statements database: one row per stream entry, keyed by the entry id,
/// so applying an entry twice is a no-op (exactly-once effect).
///
/// SQLite in WAL mode with `synchronous = FULL`: a commit is on disk before
/// the replayer acknowledges the entries to Redis, so a power cut cannot lose
/// an entry Redis considers delivered.
public final class StatementStore: Sendable {
    public let path: String
    private let pool: DatabasePool

    public enum OpenError: Error, CustomStringConvertible {
        case missing(String)
        public var description: String {
            switch self {
            case .missing(let path): return "no statements database at \(path); run `authorizer replay --db \(path)` first"
            }
        }
    }

    /// Opens (and, when `create`, creates) the database and brings its schema up to date.
    public init(path: String, create: Bool = true) async throws {
        if !create && !FileManager.default.fileExists(atPath: path) { throw OpenError.missing(path) }
        var configuration = Configuration()
        // Two replayer processes may share the file; a writer waits for the other's commit.
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        self.path = path
        self.pool = try await Self.openRetryingWhileBusy(path: path, configuration: configuration)
    }

    /// Switching a new file to WAL needs a moment of exclusive access, which
    /// SQLite's busy timeout does not cover, and two migrators can both find
    /// the schema missing: two replayers starting together on a new file
    /// retry the open (bounded) instead of failing.
    private static func openRetryingWhileBusy(path: String, configuration: Configuration) async throws -> DatabasePool {
        let deadline = Date().addingTimeInterval(10)
        while true {
            do {
                let pool = try DatabasePool(path: path, configuration: configuration)
                try migrator.migrate(pool)
                return pool
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED
                || Self.isConcurrentMigration(error) {
                // The other process applied a migration between our check
                // and our change (CREATE: "already exists", ALTER: "duplicate
                // column", the migration's record: a unique constraint on
                // grdb_migrations); ours rolled back, the retry sees it applied.
                guard Date() < deadline else { throw error }
                try await Task.sleep(for: .milliseconds(Int.random(in: 20..<50)))
            }
        }
    }

    private static func isConcurrentMigration(_ error: DatabaseError) -> Bool {
        let message = error.message ?? ""
        return message.contains("already exists") || message.contains("duplicate column")
            || (error.resultCode == .SQLITE_CONSTRAINT && message.contains("grdb_migrations"))
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: statements, rejected entries, replay progress") { db in
            try db.execute(sql: """
                CREATE TABLE statements (
                    entry_id       TEXT PRIMARY KEY NOT NULL,  -- the stream entry id, "<ms>-<seq>"
                    entry_ms       INTEGER NOT NULL,           -- when Redis wrote it (ms since the epoch)
                    entry_seq      INTEGER NOT NULL,
                    type           TEXT NOT NULL,              -- authorization | credit | set
                    txn_id         TEXT NOT NULL,
                    account        TEXT NOT NULL,
                    code           TEXT NOT NULL,              -- 00 | 51 | 07
                    amount_cents   INTEGER NOT NULL,
                    mcc            TEXT NOT NULL,
                    mcc_used       TEXT NOT NULL,
                    merchant       TEXT NOT NULL,
                    category       TEXT NOT NULL,
                    debits         TEXT NOT NULL,              -- MEAL:700,CASH:300
                    credits        TEXT NOT NULL,
                    balances       TEXT NOT NULL,              -- balance after, per touched category
                    reason         TEXT NOT NULL,
                    consumer       TEXT NOT NULL,              -- the replayer that applied it
                    replayed_at_ms INTEGER NOT NULL
                );
                CREATE INDEX statements_by_account ON statements(account, entry_ms, entry_seq);
                CREATE INDEX statements_by_time ON statements(entry_ms, entry_seq);

                -- Entries that could not be read as statements: kept, never applied, reported by audit.
                CREATE TABLE rejected_entries (
                    entry_id    TEXT PRIMARY KEY NOT NULL,
                    fields_json TEXT NOT NULL,
                    error       TEXT NOT NULL,
                    rejected_at_ms INTEGER NOT NULL
                );

                -- Written in the same transaction as the rows it counts.
                CREATE TABLE replay_progress (
                    group_name    TEXT NOT NULL,
                    consumer      TEXT NOT NULL,
                    last_entry_id TEXT NOT NULL,               -- the greatest entry id this consumer applied
                    last_ms       INTEGER NOT NULL,
                    last_seq      INTEGER NOT NULL,
                    applied       INTEGER NOT NULL,
                    duplicates    INTEGER NOT NULL,            -- re-delivered entries ignored by key
                    rejected      INTEGER NOT NULL,
                    updated_at_ms INTEGER NOT NULL,
                    PRIMARY KEY (group_name, consumer)
                );
                """)
        }
        migrator.registerMigration("v2: the original of a reversal") { db in
            try db.execute(sql: "ALTER TABLE statements ADD COLUMN original TEXT NOT NULL DEFAULT ''")
        }
        migrator.registerMigration("v3: keyed by (stream, entry id)") { db in
            // On a Redis Cluster the ledger is one stream per slot and entry
            // ids are unique only within a stream. Rows written before were
            // read from the single `statements` stream.
            try db.execute(sql: """
                CREATE TABLE statements_v3 (
                    stream         TEXT NOT NULL,              -- statements, or statements:{T} on a cluster
                    entry_id       TEXT NOT NULL,              -- the stream entry id, "<ms>-<seq>"
                    entry_ms       INTEGER NOT NULL,
                    entry_seq      INTEGER NOT NULL,
                    type           TEXT NOT NULL,
                    txn_id         TEXT NOT NULL,
                    account        TEXT NOT NULL,
                    code           TEXT NOT NULL,
                    amount_cents   INTEGER NOT NULL,
                    mcc            TEXT NOT NULL,
                    mcc_used       TEXT NOT NULL,
                    merchant       TEXT NOT NULL,
                    category       TEXT NOT NULL,
                    debits         TEXT NOT NULL,
                    credits        TEXT NOT NULL,
                    balances       TEXT NOT NULL,
                    reason         TEXT NOT NULL,
                    consumer       TEXT NOT NULL,
                    replayed_at_ms INTEGER NOT NULL,
                    original       TEXT NOT NULL DEFAULT '',
                    PRIMARY KEY (stream, entry_id)
                );
                INSERT INTO statements_v3
                    (stream, entry_id, entry_ms, entry_seq, type, txn_id, account, code, amount_cents, mcc, mcc_used,
                     merchant, category, debits, credits, balances, reason, consumer, replayed_at_ms, original)
                    SELECT 'statements', entry_id, entry_ms, entry_seq, type, txn_id, account, code, amount_cents, mcc, mcc_used,
                     merchant, category, debits, credits, balances, reason, consumer, replayed_at_ms, original
                    FROM statements;
                DROP TABLE statements;
                ALTER TABLE statements_v3 RENAME TO statements;
                CREATE INDEX statements_by_account ON statements(account, entry_ms, entry_seq);
                CREATE INDEX statements_by_stream ON statements(stream, entry_ms, entry_seq);

                CREATE TABLE rejected_entries_v3 (
                    stream      TEXT NOT NULL,
                    entry_id    TEXT NOT NULL,
                    fields_json TEXT NOT NULL,
                    error       TEXT NOT NULL,
                    rejected_at_ms INTEGER NOT NULL,
                    PRIMARY KEY (stream, entry_id)
                );
                INSERT INTO rejected_entries_v3 (stream, entry_id, fields_json, error, rejected_at_ms)
                    SELECT 'statements', entry_id, fields_json, error, rejected_at_ms FROM rejected_entries;
                DROP TABLE rejected_entries;
                ALTER TABLE rejected_entries_v3 RENAME TO rejected_entries;
                """)
        }
        migrator.registerMigration("v4: cards") { db in
            for column in ["card", "pan", "card_from", "card_to", "changed_by"] {
                try db.execute(sql: "ALTER TABLE statements ADD COLUMN \(column) TEXT NOT NULL DEFAULT ''")
            }
        }
        migrator.registerMigration("v5: benefit orders") { db in
            for column in ["order_id", "order_line", "employer"] {
                try db.execute(sql: "ALTER TABLE statements ADD COLUMN \(column) TEXT NOT NULL DEFAULT ''")
            }
        }
        return migrator
    }

    // MARK: - Applying

    /// Writes a batch and the consumer's progress in one transaction. Entries
    /// that are not valid statements go to `rejected_entries` (counted as
    /// skipped) so nothing read is ever lost. An entry
    /// already present (re-delivered after a crash between commit and XACK,
    /// or claimed from a consumer that had applied it) is ignored by its key:
    /// (stream, entry id), entries of several streams (a cluster's slot
    /// streams) going in one transaction.
    public func apply(_ batches: [(stream: String, entries: [StreamEntry])], group: String, consumer: String) async throws -> BatchOutcome {
        guard let greatest = batches.flatMap({ $0.entries.map(\.id) }).max() else { return BatchOutcome() }
        let now = Self.nowMilliseconds()
        // In a task of its own: a stop (the caller's cancellation) must not
        // interrupt the commit of a batch already read; the stop waits for it
        // and for its XACK instead.
        let pool = self.pool
        return try await Task {
            try await pool.write { db in
                try Self.insert(batches, greatest: greatest, group: group, consumer: consumer, at: now, in: db)
            }
        }.value
    }

    /// The rows of one batch and the consumer's progress, inside the caller's transaction.
    private static func insert(
        _ batches: [(stream: String, entries: [StreamEntry])], greatest: StreamID, group: String, consumer: String, at now: Int64, in db: Database
    ) throws -> BatchOutcome {
        var outcome = BatchOutcome()
        let insert = try db.cachedStatement(sql: """
            INSERT OR IGNORE INTO statements
            (stream, entry_id, entry_ms, entry_seq, type, txn_id, account, code, amount_cents, mcc, mcc_used,
             merchant, category, debits, credits, balances, reason, consumer, replayed_at_ms, original,
             card, pan, card_from, card_to, changed_by, order_id, order_line, employer)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        for (stream, entries) in batches {
            for entry in entries {
                let statement: Statement
                do {
                    statement = try Statement(entry: entry)
                } catch let error as StatementError {
                    try Self.reject(entry, stream: stream, error: error, at: now, in: db)
                    outcome.skipped += 1
                    continue
                }
                try insert.execute(arguments: [
                    stream, statement.entryID.description, Int64(statement.entryID.milliseconds), Int64(statement.entryID.sequence),
                    statement.kind.rawValue, statement.transactionID, statement.account, statement.code.rawValue,
                    statement.amount.value, statement.mcc, statement.mccUsed, statement.merchant, statement.category,
                    statement.debitsText, statement.creditsText, statement.balancesText, statement.reason,
                    consumer, now, statement.original,
                    statement.card, statement.maskedPAN, statement.from, statement.to, statement.changedBy,
                    statement.order, statement.orderLine, statement.employer,
                ])
                if db.changesCount == 1 { outcome.applied += 1 } else { outcome.duplicates += 1 }
            }
        }
        try db.execute(sql: """
            INSERT INTO replay_progress
            (group_name, consumer, last_entry_id, last_ms, last_seq, applied, duplicates, rejected, updated_at_ms)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (group_name, consumer) DO UPDATE SET
                last_entry_id = CASE WHEN (excluded.last_ms, excluded.last_seq) > (last_ms, last_seq)
                                     THEN excluded.last_entry_id ELSE last_entry_id END,
                last_seq = CASE WHEN (excluded.last_ms, excluded.last_seq) > (last_ms, last_seq)
                                THEN excluded.last_seq ELSE last_seq END,
                last_ms = MAX(last_ms, excluded.last_ms),
                applied = applied + excluded.applied,
                duplicates = duplicates + excluded.duplicates,
                rejected = rejected + excluded.rejected,
                updated_at_ms = excluded.updated_at_ms
            """, arguments: [
                group, consumer, greatest.description, Int64(greatest.milliseconds), Int64(greatest.sequence),
                outcome.applied, outcome.duplicates, outcome.skipped, now,
            ])
        return outcome
    }

    private static func reject(_ entry: StreamEntry, stream: String, error: StatementError, at now: Int64, in db: Database) throws {
        let fields = entry.fields ?? [:]
        let json = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        try db.execute(
            sql: "INSERT OR IGNORE INTO rejected_entries (stream, entry_id, fields_json, error, rejected_at_ms) VALUES (?, ?, ?, ?, ?)",
            arguments: [stream, entry.id.description, json, error.description, now]
        )
    }

    // MARK: - Reading

    public func count() throws -> Int {
        try pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM statements") ?? 0 }
    }

    public func rejectedEntries() throws -> [(entryID: String, error: String)] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT stream, entry_id, error FROM rejected_entries ORDER BY stream, entry_id").map { row in
                let stream: String = row["stream"]
                let id: String = row["entry_id"]
                return (stream == Keys.statements ? id : "\(stream) \(id)", row["error"])
            }
        }
    }

    public struct Progress: Sendable, Equatable {
        public let group: String
        public let consumer: String
        public let lastEntryID: String
        public let applied: Int
        public let duplicates: Int
        public let rejected: Int
    }

    public func progress() throws -> [Progress] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM replay_progress ORDER BY group_name, consumer").map { row in
                Progress(
                    group: row["group_name"], consumer: row["consumer"], lastEntryID: row["last_entry_id"],
                    applied: row["applied"], duplicates: row["duplicates"], rejected: row["rejected"]
                )
            }
        }
    }

    /// An account's statements, newest first.
    public func statements(account: String, limit: Int) throws -> [Statement] {
        precondition(limit > 0)
        return try pool.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT * FROM statements WHERE account = ? ORDER BY entry_ms DESC, entry_seq DESC LIMIT ?",
                arguments: [account, limit]
            ).map(Self.statement)
        }
    }

    public func statementCount(account: String) throws -> Int {
        try pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM statements WHERE account = ?", arguments: [account]) ?? 0 }
    }

    /// Every statement with an entry id below `bound` (all when nil), in
    /// stream order, streamed from one read snapshot.
    public func forEachInStreamOrder(stream: String = Keys.statements, below bound: StreamID?, _ body: (Statement) throws -> Void) throws {
        try pool.read { db in
            let cursor: RowCursor
            if let bound {
                cursor = try Row.fetchCursor(
                    db,
                    sql: "SELECT * FROM statements WHERE stream = ? AND (entry_ms, entry_seq) < (?, ?) ORDER BY entry_ms, entry_seq",
                    arguments: [stream, Int64(bound.milliseconds), Int64(bound.sequence)]
                )
            } else {
                cursor = try Row.fetchCursor(db, sql: "SELECT * FROM statements WHERE stream = ? ORDER BY entry_ms, entry_seq", arguments: [stream])
            }
            while let row = try cursor.next() {
                try body(try Self.statement(row))
            }
        }
    }

    /// Rows with `start <= entry id <= end`, in stream order.
    public func forEachInStreamOrder(stream: String = Keys.statements, from start: StreamID, through end: StreamID, _ body: (Statement) throws -> Void) throws {
        try pool.read { db in
            let cursor = try Row.fetchCursor(
                db,
                sql: "SELECT * FROM statements WHERE stream = ? AND (entry_ms, entry_seq) >= (?, ?) AND (entry_ms, entry_seq) <= (?, ?) ORDER BY entry_ms, entry_seq",
                arguments: [stream, Int64(start.milliseconds), Int64(start.sequence), Int64(end.milliseconds), Int64(end.sequence)]
            )
            while let row = try cursor.next() {
                try body(try Self.statement(row))
            }
        }
    }

    public func accounts() throws -> [String] {
        try pool.read { db in try String.fetchAll(db, sql: "SELECT DISTINCT account FROM statements") }
    }

    /// The streams rows were read from.
    public func streams() throws -> [String] {
        try pool.read { db in try String.fetchAll(db, sql: "SELECT DISTINCT stream FROM statements ORDER BY stream") }
    }

    /// Rows per stream and entry id (for checks and tools).
    public func count(stream: String) throws -> Int {
        try pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM statements WHERE stream = ?", arguments: [stream]) ?? 0 }
    }

    /// A row, read back through the same checks as a stream entry.
    private static func statement(_ row: Row) throws -> Statement {
        let columns: [(field: String, column: String)] = [
            ("type", "type"), ("id", "txn_id"), ("account", "account"), ("code", "code"), ("mcc", "mcc"),
            ("mcc_used", "mcc_used"), ("merchant", "merchant"), ("category", "category"), ("debits", "debits"),
            ("credits", "credits"), ("balances", "balances"), ("reason", "reason"), ("original", "original"),
            ("card", "card"), ("pan", "pan"), ("from", "card_from"), ("to", "card_to"), ("by", "changed_by"),
            ("order", "order_id"), ("line", "order_line"), ("employer", "employer"),
        ]
        var fields: [String: String] = [:]
        for (field, column) in columns { fields[field] = row[column] }
        let amount: Int64 = row["amount_cents"]
        fields["amount"] = String(amount)
        let text: String = row["entry_id"]
        guard let id = StreamID(text) else { throw StatementError.malformed("row with entry id \(text)") }
        return try Statement(entry: StreamEntry(id: id, fields: fields))
    }

    static func nowMilliseconds() -> Int64 {
        Int64(Date().timeIntervalSince1970 * 1000)
    }
}
