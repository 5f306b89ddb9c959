#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import AuthorizerCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A reversal the service owes: an authorization answered `07 timeout`
/// whose script may still run (or may have run) in Redis.
public struct PendingReversal: Hashable, Sendable {
    public let account: String
    public let original: String
    /// When the request that timed out was answered `07` (wall clock, µs
    /// since 1970; 0 in lines written before it was recorded): an approval
    /// that an attempt of the id received later was answered stands, and
    /// this reversal credits nothing (reverse.lua).
    public let owedSince: Int64

    public init(account: String, original: String, owedSince: Int64 = 0) {
        precondition(owedSince >= 0)
        self.account = account
        self.original = original
        self.owedSince = owedSince
    }

    /// Of two reversals owed for one original, the later `07`'s.
    func later(than other: PendingReversal) -> Bool {
        owedSince > other.owedSince
    }

    /// One reversal per account and original: `owedSince` rides along.
    public static func == (lhs: PendingReversal, rhs: PendingReversal) -> Bool {
        lhs.account == rhs.account && lhs.original == rhs.original
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(account)
        hasher.combine(original)
    }

    /// The reversal's own id. The `/` cannot appear in a terminal's id, so it
    /// never meets a terminal's reversal record.
    public var reversalID: String { "timeout/\(original)" }
}

/// The store-and-forward queue of reversals owed by this service, kept in a
/// small local file so that they survive a crash of `serve`.
///
/// The file is a log of lines: `A <account> <original> <µs>` when a reversal is
/// owed (written before the terminal hears `07 timeout`, and fsynced before
/// it unless the fsync outlasts the answer's deadline: see `Appended`) and
/// `D <account> <original> <µs>` once Redis acknowledged it (not fsynced: replaying
/// an applied reversal is a no-op). At start the log is read, what is still
/// owed is rewritten into a fresh file, and handed back to be applied. The
/// file is truncated whenever nothing is owed, and rewritten when it grows
/// past `compactBytes` with mostly finished entries.
///
/// File work happens on two dedicated threads, never on an event loop: one
/// writes lines (and truncates or compacts the file), the other fsyncs, so
/// a slow fsync never holds back the next line's write. Appends that arrive
/// while a write or an fsync is in progress go together in the next one
/// (group commit).
public final class ReversalJournal: @unchecked Sendable {
    /// The two moments of an append. `written`: the line is in the kernel, so
    /// it survives a crash of `serve` (SIGKILL included). `durable`: it is
    /// fsynced, so it survives a crash of the host too.
    public struct Appended: Sendable {
        public let written: EventLoopFuture<Void>
        public let durable: EventLoopFuture<Void>
    }

    public let path: String
    public let maxEntries: Int
    private let compactBytes: Int
    private let logger: Logger
    private let metrics: ServerMetrics
    private let thread: NIOThreadPool
    private let syncThread: NIOThreadPool
    private let syncFile: @Sendable (Int32) -> Int32

    private let lock = NIOLock()
    // Under `lock`:
    private var pending: Set<PendingReversal> = []
    private var appends: [(PendingReversal, written: EventLoopPromise<Void>, durable: EventLoopPromise<Void>)] = []
    private var done: [PendingReversal] = []
    private var writing = false
    /// Written lines waiting for an fsync; only the writer adds to it.
    private var syncWaiters: [EventLoopPromise<Void>] = []
    private var syncing = false
    // On the writer thread; read by the sync thread only while `syncing`,
    // and `rewrite` (which replaces it) runs only while it is not.
    private var fd: Int32 = -1
    private var fileBytes = 0
    /// Held (flock) for the life of the process: one serve per state directory.
    private var lockFD: Int32 = -1

    public enum JournalError: Error, CustomStringConvertible {
        case io(String, Int32)
        case inUse(String)
        public var description: String {
            switch self {
            case .inUse(let directory): return "another serve uses the state directory \(directory)"
            case .io(let what, let code): return "\(what): \(String(cString: strerror(code)))"
            }
        }
    }

    /// Opens (creating the directory and file when missing) and returns the
    /// reversals still owed from a previous run.
    /// `syncFile` is `fsync` (a test may hold it back to stand for a stalled disk).
    public init(
        directory: String, maxEntries: Int = 10_000, compactBytes: Int = 1 << 20, logger: Logger, metrics: ServerMetrics = .disabled,
        syncFile: @escaping @Sendable (Int32) -> Int32 = { fsync($0) }
    ) throws {
        precondition(maxEntries > 0)
        self.syncFile = syncFile
        self.syncThread = NIOThreadPool(numberOfThreads: 1)
        self.path = directory.hasSuffix("/") ? directory + "pending-reversals.log" : directory + "/pending-reversals.log"
        self.maxEntries = maxEntries
        self.compactBytes = compactBytes
        self.logger = logger
        self.metrics = metrics
        self.thread = NIOThreadPool(numberOfThreads: 1)
        try Self.makeDirectory(directory)
        let lockPath = path + ".lock"
        lockFD = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0 else { throw JournalError.io("open \(lockPath)", errno) }
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            Glibc.close(lockFD)
            throw code == EWOULDBLOCK ? JournalError.inUse(directory) : JournalError.io("flock \(lockPath)", code)
        }
        pending = try Self.read(path: path, logger: logger)
        try rewrite(pending)
        thread.start()
        syncThread.start()
        metrics.reversalJournal(pending: pending.count, bytes: fileBytes)
    }

    /// What is owed right now.
    public var owed: [PendingReversal] {
        lock.withLock { Array(pending) }
    }

    public var count: Int {
        lock.withLock { pending.count }
    }

    /// What the journal says of a new authorization, under one lock.
    public enum Admission: Equatable {
        case admit
        /// No room for another reversal: a timeout could not be made good.
        case full
        /// Its id's reversal is owed: a repeat must not hear an approval about to be undone.
        case reversing
    }

    public func admission(of entry: PendingReversal) -> Admission {
        lock.withLock {
            if pending.isEmpty { return .admit }
            if pending.count >= maxEntries { return .full }
            return pending.contains(entry) ? .reversing : .admit
        }
    }

    /// Records a reversal as owed; its futures complete on `eventLoop` once
    /// the line is written, then once it is fsynced. An entry owed twice is
    /// written twice (harmless: the log is read as a set), so that each
    /// caller's answer waits for a line of its own.
    public func append(_ entry: PendingReversal, on eventLoop: EventLoop) -> Appended {
        let written = eventLoop.makePromise(of: Void.self)
        let durable = eventLoop.makePromise(of: Void.self)
        let start = lock.withLock { () -> Bool in
            Self.owe(entry, in: &pending)
            appends.append((entry, written, durable))
            metrics.reversalJournal(pending: pending.count, bytes: nil)
            defer { writing = true }
            return !writing
        }
        if start { thread.submit { _ in self.writeLoop() } }
        return Appended(written: written.futureResult, durable: durable.futureResult)
    }

    /// `A|D <account> <original> <µs>` (`owedSince`; lines of earlier versions
    /// have no fourth field, or a request token there: read as 0).
    static func line(_ kind: String, _ entry: PendingReversal) -> String {
        "\(kind) \(entry.account) \(entry.original) \(entry.owedSince)\n"
    }

    /// One entry per original, the latest `07`'s.
    private static func owe(_ entry: PendingReversal, in set: inout Set<PendingReversal>) {
        if let stored = set.stored(entry), !entry.later(than: stored) { return }
        set.update(with: entry)
    }

    /// Redis acknowledged the reversal: it is no longer owed.
    public func acknowledge(_ entry: PendingReversal) {
        let start = lock.withLock { () -> Bool? in
            // A later 07 of the same original owes a reversal of its own.
            guard let owed = pending.stored(entry), !owed.later(than: entry) else { return nil }
            pending.remove(owed)
            done.append(entry)
            // Under the lock, so the gauge never shows an older count last.
            metrics.reversalJournal(pending: pending.count, bytes: nil)
            defer { writing = true }
            return !writing
        }
        if start == true { thread.submit { _ in self.writeLoop() } }
    }

    public func close() {
        try? thread.syncShutdownGracefully()
        try? syncThread.syncShutdownGracefully()
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        if lockFD >= 0 { Glibc.close(lockFD) }
        lockFD = -1
    }

    // MARK: - On the journal thread

    private func writeLoop() {
        while true {
            let (adds, finished, owedNow) = lock.withLock { () -> ([(PendingReversal, written: EventLoopPromise<Void>, durable: EventLoopPromise<Void>)], [PendingReversal], Set<PendingReversal>?) in
                let batch = (appends, done)
                appends = []
                done = []
                if batch.0.isEmpty && batch.1.isEmpty { writing = false }
                return (batch.0, batch.1, batch.0.isEmpty && batch.1.isEmpty ? nil : pending)
            }
            guard let owedNow else { return }
            var text = ""
            for add in adds { text += Self.line("A", add.0) }
            for entry in finished { text += Self.line("D", entry) }
            do {
                try writeAll(text)
                for add in adds { add.written.succeed() }
                if !adds.isEmpty { requestSync(adds.map(\.durable)) }
            } catch {
                logger.error("reversal journal write failed; the reversals stay owed in memory", metadata: ["path": "\(path)", "error": "\(error)"])
                for add in adds {
                    add.written.fail(error)
                    add.durable.fail(error)
                }
            }
            do {
                if owedNow.isEmpty && fileBytes > 0 {
                    // Nothing owed: the whole log is finished business.
                    guard ftruncate(fd, 0) == 0 else { throw JournalError.io("truncate \(path)", errno) }
                    fileBytes = 0
                } else if fileBytes > compactBytes && owedNow.count * 80 < fileBytes / 2 && !lock.withLock({ syncing }) {
                    // Only the writer starts an fsync, so none starts during the rewrite.
                    try rewrite(owedNow)
                }
            } catch {
                logger.warning("reversal journal compaction failed", metadata: ["path": "\(path)", "error": "\(error)"])
            }
            metrics.reversalJournal(pending: nil, bytes: fileBytes)
        }
    }

    /// Hands written lines to the sync thread.
    private func requestSync(_ waiters: [EventLoopPromise<Void>]) {
        let start = lock.withLock { () -> Bool in
            syncWaiters += waiters
            defer { syncing = true }
            return !syncing
        }
        if start { syncThread.submit { _ in self.syncLoop() } }
    }

    /// On the sync thread: one fsync for every line written before it began.
    private func syncLoop() {
        while true {
            let waiters = lock.withLock { () -> [EventLoopPromise<Void>] in
                let batch = syncWaiters
                syncWaiters = []
                if batch.isEmpty { syncing = false }
                return batch
            }
            guard !waiters.isEmpty else { return }
            assert(fd >= 0, "the journal's file is open while lines wait for an fsync")
            if syncFile(fd) == 0 {
                for waiter in waiters { waiter.succeed() }
            } else {
                let error = JournalError.io("fsync \(path)", errno)
                logger.error("reversal journal fsync failed; the reversals stay owed in memory", metadata: ["path": "\(path)", "error": "\(error)"])
                for waiter in waiters { waiter.fail(error) }
            }
        }
    }

    private func writeAll(_ text: String) throws {
        guard !text.isEmpty else { return }
        guard fd >= 0 else { throw JournalError.io("journal \(path) is not open", EBADF) }
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw JournalError.io("write \(path)", errno)
            }
            offset += written
        }
        fileBytes += bytes.count
    }

    /// Replaces the file with one holding exactly `entries`: a temp file,
    /// fsynced, renamed over the log, then the directory fsynced.
    private func rewrite(_ entries: Set<PendingReversal>) throws {
        let temporary = path + ".tmp"
        let out = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw JournalError.io("open \(temporary)", errno) }
        let text = entries.map { Self.line("A", $0) }.joined()
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(out, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                let code = errno
                Glibc.close(out)
                throw JournalError.io("write \(temporary)", code)
            }
            offset += written
        }
        guard fsync(out) == 0 else {
            let code = errno
            Glibc.close(out)
            throw JournalError.io("fsync \(temporary)", code)
        }
        Glibc.close(out)
        guard rename(temporary, path) == 0 else { throw JournalError.io("rename \(temporary)", errno) }
        let directory = ParentDirectory(path).directory
        let dirFD = open(directory, O_RDONLY | O_CLOEXEC)
        if dirFD >= 0 {
            _ = fsync(dirFD)
            Glibc.close(dirFD)
        }
        if fd >= 0 { Glibc.close(fd) }
        fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { throw JournalError.io("open \(path)", errno) }
        fileBytes = bytes.count
    }

    private static func makeDirectory(_ directory: String) throws {
        var current = directory.hasPrefix("/") ? "" : "."
        for part in directory.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o700) != 0 && errno != EEXIST {
                throw JournalError.io("mkdir \(current)", errno)
            }
        }
    }

    /// The entries added and not finished. A torn last line (a crash in the
    /// middle of a write that was never acknowledged to anyone) is skipped.
    private static func read(path: String, logger: Logger) throws -> Set<PendingReversal> {
        let input = open(path, O_RDONLY | O_CLOEXEC)
        if input < 0 {
            if errno == ENOENT { return [] }
            throw JournalError.io("open \(path)", errno)
        }
        defer { Glibc.close(input) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(input, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw JournalError.io("read \(path)", errno)
            }
            if count == 0 { break }
            data.append(contentsOf: chunk[..<count])
        }
        var owed: Set<PendingReversal> = []
        var skipped = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            let parts = line.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
            guard parts.count == 3 || parts.count == 4, Identifier.isValid(parts[1]), Identifier.isValid(parts[2]),
                  parts.count == 3 || Identifier.isValid(parts[3]) else {
                skipped += 1
                continue
            }
            let since = parts.count == 4 ? Int64(parts[3]).map { max($0, 0) } ?? 0 : 0
            let entry = PendingReversal(account: parts[1], original: parts[2], owedSince: since)
            switch parts[0] {
            case "A": owe(entry, in: &owed)
            case "D": if let stored = owed.stored(entry), !stored.later(than: entry) { owed.remove(stored) }
            default: skipped += 1
            }
        }
        if skipped > 0 {
            logger.warning("reversal journal: skipped unreadable lines", metadata: ["path": "\(path)", "lines": "\(skipped)"])
        }
        return owed
    }
}

/// The directory part of a path (`dirname`), without Foundation.
private struct ParentDirectory {
    let text: String
    init(_ text: String) { self.text = text }
    var directory: String {
        guard let slash = text.lastIndex(of: "/") else { return "." }
        return slash == text.startIndex ? "/" : String(text[..<slash])
    }
}


extension Set where Element == PendingReversal {
    /// The entry this set holds for `entry`'s account and original.
    fileprivate func stored(_ entry: PendingReversal) -> PendingReversal? {
        firstIndex(of: entry).map { self[$0] }
    }
}
