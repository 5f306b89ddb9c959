@testable import AuthorizerServer
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import XCTest

/// The journal's two moments, against a real file, with its fsync held back
/// (a stalled disk) by a gate the test opens.
final class ReversalJournalTests: XCTestCase {
    private var directory: URL!
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString)")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
        try group.syncShutdownGracefully()
    }

    /// An fsync that waits until the test opens the gate.
    private final class StalledDisk: Sendable {
        private let open = DispatchSemaphore(value: 0)
        let syncs = NIOLockedValueBox(0)
        func sync(_ fd: Int32) -> Int32 {
            syncs.withLockedValue { $0 += 1 }
            open.wait()
            open.signal()
            return fsync(fd)
        }
        func release() { open.signal() }
    }

    private func journal(_ disk: StalledDisk? = nil) throws -> ReversalJournal {
        var logger = Logger(label: "journal-test")
        logger.logLevel = .critical
        if let disk {
            return try ReversalJournal(directory: directory.path, logger: logger, syncFile: { disk.sync($0) })
        }
        return try ReversalJournal(directory: directory.path, logger: logger)
    }

    /// Waits for `future` at most `seconds` (a stalled journal must fail the test, not hang it).
    private func waitFor(_ future: EventLoopFuture<Void>, seconds: Double = 10, _ what: String) throws {
        let done = expectation(description: what)
        future.whenSuccess { done.fulfill() }
        wait(for: [done], timeout: seconds)
    }

    private func fileText() throws -> String {
        try String(contentsOf: directory.appendingPathComponent("pending-reversals.log"), encoding: .utf8)
    }

    func testALineIsWrittenWhileItsFsyncStallsAndDurableOnlyAfter() throws {
        let disk = StalledDisk()
        let journal = try journal(disk)
        let first = journal.append(PendingReversal(account: "a1", original: "t1"), on: group.next())
        try waitFor(first.written, "the first line written")
        XCTAssertTrue(try fileText().contains("A a1 t1 0\n"))
        let durable = NIOLockedValueBox(false)
        first.durable.whenComplete { _ in durable.withLockedValue { $0 = true } }

        // The next line is written while the first one's fsync is still stalled.
        let second = journal.append(PendingReversal(account: "a2", original: "t2"), on: group.next())
        try waitFor(second.written, "the second line written while the first fsync stalls")
        XCTAssertTrue(try fileText().contains("A a2 t2 0\n"))
        XCTAssertFalse(durable.withLockedValue { $0 }, "durable before its fsync returned")

        disk.release()
        try first.durable.wait()
        try second.durable.wait()
        XCTAssertGreaterThanOrEqual(disk.syncs.withLockedValue { $0 }, 1)
        journal.close()
    }

    func testAWrittenLineIsOwedAfterARestartThoughItsFsyncNeverEnded() throws {
        let disk = StalledDisk()
        let journal = try journal(disk)
        try waitFor(journal.append(PendingReversal(account: "a1", original: "t1"), on: group.next()).written, "the line written")
        // The process goes; the kernel keeps what was written. (The gate opens
        // so the journal's threads can stop; the next one reads the file as is.)
        disk.release()
        journal.close()
        let next = try self.journal()
        XCTAssertEqual(next.owed, [PendingReversal(account: "a1", original: "t1")])
        next.close()
    }

    func testAcknowledgedReversalsLeaveNothingOwed() throws {
        let journal = try journal()
        let entry = PendingReversal(account: "a1", original: "t1")
        try journal.append(entry, on: group.next()).durable.wait()
        journal.acknowledge(entry)
        journal.close()
        let next = try self.journal()
        XCTAssertEqual(next.owed, [])
        next.close()
    }

    /// Two 07s of one original: the entry owed is the later one's, which an
    /// acknowledgement of the earlier's reversal (which may have credited
    /// nothing, yielding to an approval heard in between) does not settle.
    func testTheLaterOf07sOfOneOriginalStaysOwedUntilItsOwnReversal() throws {
        let journal = try journal()
        let earlier = PendingReversal(account: "a1", original: "t1", owedSince: 100)
        let later = PendingReversal(account: "a1", original: "t1", owedSince: 200)
        try journal.append(earlier, on: group.next()).durable.wait()
        try journal.append(later, on: group.next()).durable.wait()
        journal.acknowledge(earlier)
        XCTAssertEqual(journal.owed.map(\.owedSince), [200])
        journal.close()
        let next = try self.journal()
        XCTAssertEqual(next.owed.map(\.owedSince), [200], "read back from the lines: A 100, A 200, D 100")
        next.acknowledge(later)
        XCTAssertEqual(next.count, 0)
        next.close()
    }
}
